"""`python -m research` as a user runs it: exit codes, one-line errors, JSON output."""

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakes import tiny_gguf

from research.models import resolve

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None, timeout=180):
    env = os.environ | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "research", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(r, pattern):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert pattern in lines[0], lines[0]


def test_help_lists_subcommands_and_each_has_its_own():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("models", "inspect", "download", "chat", "demo"):
        assert cmd in r.stdout
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout, (cmd, sub.stderr)
    assert "--listen-anywhere" in run("demo", "--help").stdout


@pytest.mark.model
def test_chat_prompt_json():
    r = run(
        "chat",
        "--prompt",
        "What is the capital of France?",
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "32",
        "--ctx",
        "512",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # one JSON object and nothing else on stdout
    for key in (
        "answer",
        "prompt_tokens",
        "completion_tokens",
        "ttft_s",
        "prompt_tps",
        "decode_tps",
        "peak_rss_mb",
        "model",
    ):
        assert key in out
    assert out["answer"].strip() and out["model"] == "smollm2-135m-q4_1" and out["completion_tokens"] <= 32


@pytest.mark.model
def test_chat_prompt_plain_prints_answer_then_figures():
    r = run("chat", "-p", "Say hi.", "--temperature", "0", "--max-tokens", "16", "--ctx", "512")
    assert r.returncode == 0 and r.stdout.strip()
    assert "t/s" in r.stderr.strip().splitlines()[-1]


@pytest.mark.model
def test_interactive_loop_keeps_the_conversation():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "research",
            "chat",
            "--temperature",
            "0",
            "--max-tokens",
            "16",
            "--ctx",
            "512",
        ],
        input="My name is Ada.\nWhat did I say my name was?\n\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0
    assert r.stderr.count("tokens at") == 2  # one line of figures per answer


def test_inspect_bundled_model_text_and_json():
    r = run("inspect")
    assert r.returncode == 0 and "llama" in r.stdout and "Q4_1" in r.stdout
    info = json.loads(run("inspect", "smollm2-135m-q4_1", "--json").stdout)
    assert info["architecture"] == "llama" and info["has_chat_template"] is True
    assert 4 < info["bits_per_weight"] < 7 and info["context_length"] == 8192
    assert set(info["type_mix"]) >= {"Q4_1", "Q8_0"}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    src = resolve(None).path
    folder = tmp_path_factory.mktemp("damaged")
    cut = folder / "truncated.gguf"
    with open(src, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(5_000_000))
    html = folder / "page.gguf"
    html.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    empty = folder / "empty.gguf"
    empty.write_bytes(b"")
    return {"truncated": cut, "html": html, "empty": empty}


@pytest.mark.parametrize("kind, pattern", [("truncated", "truncated"), ("html", "HTML"), ("empty", "empty")])
@pytest.mark.parametrize("command", ["inspect", "chat"])
def test_damaged_files_give_one_line(damaged, kind, pattern, command):
    args = [str(damaged[kind])] if command == "inspect" else ["--model", str(damaged[kind]), "-p", "hi"]
    assert_one_line_error(run(command, *args), pattern)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["inspect", "no-such-model"], "unknown model"),
        (["inspect", "/no/such/file.gguf"], "no such file"),
        (["chat", "-m", "orca-mini-3b-q4_0", "-p", "hi"], "python -m research download orca-mini-3b-q4_0"),
        (["chat", "-p", "   "], "empty question"),
        (["chat", "-p", "hi", "--format", "klingon"], "unknown chat format"),
        (["download", "no-such-id"], "unknown catalog id"),
    ],
)
def test_user_errors_give_one_line(args, pattern):
    assert_one_line_error(run(*args), pattern)


def test_models_lists_catalog_and_presence():
    r = run("models")
    assert r.returncode == 0
    line = next(x for x in r.stdout.splitlines() if x.startswith("smollm2-135m-q4_1"))
    assert "bundled" in line and "(default)" in line
    rows = json.loads(run("models", "--json").stdout)
    assert any(r["id"].startswith("orca-mini-3b") for r in rows)
    assert all(r["present"] is False for r in rows if not r["bundled"])


def test_download_from_a_local_hub_then_inspect(tmp_path):
    hub = tmp_path / "hub" / "test-org" / "tiny-GGUF" / "resolve" / "main"
    hub.mkdir(parents=True)
    data = tiny_gguf(hub / "tiny.gguf")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    entry = {
        "id": "tiny-f32",
        "name": "Tiny",
        "file": "tiny.gguf",
        "quant": "F32",
        "prompt_format": "chatml",
        "license": "MIT",
        "repo": "test-org/tiny-GGUF",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (data_dir / "models.yaml").write_text(json.dumps({"models": [entry]}))  # JSON is YAML
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "hub"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "RESEARCH_DATA_DIR": str(data_dir),
        "RESEARCH_MODELS_DIR": str(tmp_path / "models"),
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
    }
    try:
        r = run("download", "tiny-f32", "--quiet", env=env)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "models" / "tiny.gguf").read_bytes() == data
        assert "yes" in run("models", env=env).stdout.splitlines()[1]
        assert json.loads(run("inspect", "tiny-f32", "--json", env=env).stdout)["n_params"] == 128
        # A wrong hash in the catalog: refused and nothing left behind.
        shutil.rmtree(tmp_path / "models")
        entry["sha256"] = "0" * 64
        (data_dir / "models.yaml").write_text(json.dumps({"models": [entry]}))
        assert_one_line_error(run("download", "tiny-f32", "--quiet", env=env), "sha256 check failed")
        assert not list((tmp_path / "models").glob("*"))
    finally:
        server.shutdown()


@pytest.mark.model
def test_quality_and_memory_commands(tmp_path):
    r = run("quality", "--ctx", "128", "--chunks", "2")
    assert r.returncode == 0, r.stderr
    assert "PPL" in r.stdout and "smollm2-135m-q4_1" in r.stdout
    bad = tmp_path / "short.txt"
    bad.write_text("Too short.")
    assert_one_line_error(run("quality", "--corpus", str(bad)), "one chunk needs 512")
    r = run("memory", "--kv-type", "f16,q8_0", "--json")
    assert r.returncode == 0, r.stderr
    f16, q8 = json.loads(r.stdout)
    assert q8["kv_cache"] < f16["kv_cache"] and f16["weights"] == resolve(None).path.stat().st_size
    assert_one_line_error(run("memory", "--kv-type", "q3"), "unknown KV-cache type 'q3'")

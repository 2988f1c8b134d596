"""`python -m research` as a user runs it: exit codes, one-line errors, JSON output."""

import argparse
import functools
import hashlib
import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakes import tiny_gguf

from research.models.catalog import resolve

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
    assert "--listen-anywhere" in sub.stdout  # demo's, the page's own options


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
        # The developer's own Hugging Face login must not be sent to this test's server.
        "HF_TOKEN": "",
        "HUGGING_FACE_HUB_TOKEN": "",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_TOKEN_PATH": str(tmp_path / "hf" / "token"),
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


# --- Options out of range: one line, a non-zero exit, no model loaded ------------------------------
#
# "One line" means exactly one line on stderr, starting with "error: ". argparse would print its
# usage (several lines) and then the error; the kit's parser (research.engine.options.Parser) prints
# only the error, naming the option and its range, and exits 2 as argparse does.

#: Every numeric option of every subcommand, with values outside its range (below, above,
#: not finite, not whole). Each must be refused by the range itself ("must be ..."), not only
#: by int() or float(): a row passes with `type=int` only if int() also refuses the text.
BAD_NUMBERS = {
    "chat": {
        "--ctx": ["0", "63", "2147483393"],
        "--threads": ["-1", "100000"],
        "--temperature": ["-0.1", "nan", "inf"],
        "--top-k": ["-1", "1073741825"],
        "--top-p": ["0", "1.01"],
        "--min-p": ["-0.01", "nan"],
        "--repeat-penalty": ["0", "inf"],
        "--max-tokens": ["0", "-3"],
        "--seed": ["-1", "4294967295"],
    },
    "eval": {"--ctx": ["0"], "--threads": ["0"], "--limit": ["0", "-1"]},
    "bench": {"--threads": ["0", "1,-1"], "--pp": ["0"], "--tg": ["1"], "--reps": ["0"]},
    "quality": {"--ctx": ["32"], "--chunks": ["0", "-1"], "--threads": ["0"]},
    "memory": {"--ctx": ["-1"], "--kv-type": ["q3", ","]},
    "quantize": {"--threads": ["0"]},
    "build": {"--jobs": ["0"]},
}

#: What else each subcommand needs to get past its other checks if an option were let through:
#: then it would load a model (recorded by the fake llama_cpp) or print figures, and fail here.
#: bench never builds llama-bench, build only checks, chat answers one question.
CONTEXT = {
    "chat": ["-p", "hi"],
    "eval": ["--out", "{tmp}/records.jsonl", "--limit", "1"],
    "bench": ["--no-llama-bench", "--reps", "1", "--pp", "16", "--tg", "4"],
    "quality": ["--chunks", "1"],
    "quantize": ["--types", "Q4_0", "--out", "{tmp}/ladder"],
    "build": ["--check"],
}

FAKE_LLAMA_CPP = """
import os
open(os.environ["RESEARCH_TEST_MARKER"], "w").close()
raise ImportError("the test's stand-in for llama_cpp: this command would have loaded a model")
"""


@pytest.fixture(scope="module")
def fake_llama(tmp_path_factory):
    """A folder for PYTHONPATH whose llama_cpp records that it was imported: any model load does."""
    folder = tmp_path_factory.mktemp("fake-llama")
    (folder / "llama_cpp").mkdir()
    (folder / "llama_cpp" / "__init__.py").write_text(FAKE_LLAMA_CPP)
    return folder


def unloaded_env(marker, fake_llama) -> dict:
    """The environment of a CLI child with the stand-in llama_cpp: the stand-in first, then what was
    there (the code under test, which conftest put first, and the network audit), never instead."""
    pythonpath = os.pathsep.join(filter(None, [str(fake_llama), os.environ.get("PYTHONPATH")]))
    return os.environ | {"PYTHONPATH": pythonpath, "RESEARCH_TEST_MARKER": str(marker)}


def run_unloaded(args, tmp_path, fake_llama):
    """Run the CLI with a llama_cpp that cannot load anything; asserts that none was imported."""
    marker = tmp_path / "llama_cpp-imported"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "research", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=unloaded_env(marker, fake_llama),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert not marker.exists(), f"{args}: a model was loaded before the error: {r.stderr}"
    return r


WHERE_FROM = """
import importlib.util, json, sys, sysconfig
import research
llama = importlib.util.find_spec("llama_cpp").origin  # found, not imported: the stand-in refuses that
print(json.dumps([research.__file__, llama, sys.path, sysconfig.get_paths()["purelib"]]))
"""


@pytest.mark.parametrize("helper", ["run", "run_unloaded"])
def test_cli_children_import_the_code_under_test(helper, tmp_path, fake_llama):
    """A child the tests start imports this checkout's src/ (ahead of site-packages, where an
    installed or editable copy of the kit, perhaps of another checkout, would be found)."""
    env = os.environ if helper == "run" else unloaded_env(tmp_path / "marker", fake_llama)
    r = subprocess.run(
        [sys.executable, "-c", WHERE_FROM], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert r.returncode == 0, r.stderr
    research_file, llama_file, path, site = json.loads(r.stdout)
    assert research_file == str(ROOT / "src" / "research" / "__init__.py")
    assert path.index(str(ROOT / "src")) < path.index(site)
    if helper == "run_unloaded":
        assert llama_file == str(fake_llama / "llama_cpp" / "__init__.py")


def one_line(r) -> str:
    """The only line on stderr, after checking the exit code and that there is no traceback."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command, option, value",
    [(c, o, v) for c, opts in BAD_NUMBERS.items() for o, values in opts.items() for v in values],
)
def test_numbers_out_of_range_are_refused_before_loading(command, option, value, tmp_path, fake_llama):
    r = run_unloaded([command, *CONTEXT.get(command, []), f"{option}={value}"], tmp_path, fake_llama)
    line = one_line(r)
    assert r.returncode == 2
    assert line.startswith(f"error: argument {option}") and repr(value) in line, line
    assert "must be" in line or "KV-cache type" in line, line


@pytest.mark.parametrize(
    "args, pattern",
    [
        ([], "the following arguments are required: COMMAND"),
        (["chat", "--no-such-option"], "unrecognized arguments"),
        (["quantize", "--types", "Q4_0"], "required: --out"),
        (["memory", "--cpu", "pentium"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(args, pattern, tmp_path, fake_llama):
    line = one_line(run_unloaded(args, tmp_path, fake_llama))
    assert pattern in line and "--help" in line, line


@pytest.fixture
def paths(tmp_path):
    """A folder, a file, and names of things that do not exist."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("text\n")
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would wait for a writer that never comes
    return {k: str(tmp_path / v) for k, v in [("folder", "folder"), ("file", "file.txt")]}


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["eval", "--out", "{folder}"], "is a folder"),
        (["eval", "--out", "{file}/records.jsonl"], "is a file, not a folder"),
        (["eval", "--out", "/proc/self/records.jsonl"], "not writable"),  # not even for root
        (["eval", "--out", "{tmp}/r.jsonl", "--questions", "{folder}"], "is a folder"),
        (["eval", "--out", "{tmp}/r.jsonl", "--questions", "{tmp}/none.jsonl"], "no such file"),
        (["bench", "--no-llama-bench", "--json", "{folder}"], "is a folder"),
        (["bench", "--no-llama-bench", "--csv", "{folder}"], "is a folder"),
        (["bench", "--no-llama-bench", "--json", "{tmp}/no/such/folder/b.json"], "no folder"),
        (["quality", "--corpus", "{folder}"], "is a folder"),
        (["quality", "--corpus", "{tmp}/none.txt"], "no such file"),
        (["quality", "--corpus", "{tmp}/pipe.txt"], "not a regular file"),
        (["eval", "--out", "{tmp}/r.jsonl", "--questions", "{tmp}/pipe.txt"], "not a regular file"),
        (["inspect", ""], "the model is empty"),  # not the bundled model in its place
        (["chat", "--model", " ", "--prompt", "hi"], "the model is empty"),
        # bench's context is pp + tg + 64, capped at the model's trained 8192: refused from the header.
        (["bench", "--no-llama-bench", "--pp", "8000", "--tg", "200"], "trained on 8192"),
    ],
)
def test_wrong_paths_and_sizes_are_one_line_before_loading(args, pattern, paths, tmp_path, fake_llama):
    args = [a.format(tmp=tmp_path, **paths) for a in args]
    line = one_line(run_unloaded(args, tmp_path, fake_llama))
    assert pattern in line, line


def test_an_os_error_that_escapes_is_one_line(tmp_path, monkeypatch, capsys):
    """main()'s last line of defence: an OSError no check foresaw; programming errors still raise."""
    from research.cli import commands as cli

    monkeypatch.setattr(cli, "cmd_models", lambda args: open(tmp_path, "w"))  # a real EISDIR
    monkeypatch.delenv("RESEARCH_TRACEBACK", raising=False)
    assert cli.main(["models"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path}: Is a directory\n"
    monkeypatch.setenv("RESEARCH_TRACEBACK", "1")
    with pytest.raises(IsADirectoryError):
        cli.main(["models"])
    monkeypatch.delenv("RESEARCH_TRACEBACK")
    monkeypatch.setattr(cli, "cmd_models", lambda args: int("not a number"))
    with pytest.raises(ValueError):  # a bug is not a user's error: it keeps its traceback
        cli.main(["models"])


# --- The same ranges for code that builds Sampling and EngineConfig (the page, its API) -------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", "0.7"),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_k", True),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_p", math.nan),
        ("min_p", -0.01),
        ("min_p", 1.5),
        ("repeat_penalty", 0.0),
        ("repeat_penalty", -1.0),
        ("repeat_penalty", math.inf),
        ("max_tokens", 0),
        ("max_tokens", -3),
        ("max_tokens", 16.0),
        ("seed", -2),
        ("seed", 2**32 - 1),
        ("seed", 1.5),
        ("ignore_eos", "yes"),
    ],
)
def test_sampling_refuses_values_out_of_range(field, value):
    from research.engine import Sampling
    from research.errors import KitError

    with pytest.raises(KitError) as e:
        Sampling(**{field: value})
    assert str(e.value).startswith(f"{field} must be") and "\n" not in str(e.value)


def test_sampling_keeps_its_bounds_and_none_meanings():
    import numpy as np

    from research.engine import Sampling

    Sampling()
    Sampling(temperature=0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, max_tokens=1, seed=0)
    Sampling(temperature=5, top_k=2**30, top_p=1e-9, min_p=1, repeat_penalty=1e-6, seed=2**32 - 2)
    Sampling(seed=None)  # a fresh random seed
    Sampling(seed=-1)  # the page's "random", and bench's warm-up
    Sampling(temperature=np.float32(0.5), top_k=np.int64(40), max_tokens=np.int32(8))  # from NumPy


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_ctx", 0),  # llama.cpp: the model's whole trained context, past the memory check
        ("n_ctx", -1),
        ("n_ctx", 63),
        ("n_ctx", 2**31),
        ("n_ctx", 4096.0),
        ("n_ctx", "4096"),
        ("n_threads", 0),
        ("n_threads", -1),
        ("n_threads", 513),
        ("n_batch", 0),
        ("n_ubatch", 0),
        ("n_ubatch", -512),
        ("use_mmap", "no"),
        ("flash_attn", None),
        ("kv_type", "q3"),
        ("kv_type", None),
        ("chat_format", 3),
    ],
)
def test_engine_config_refuses_values_out_of_range(field, value):
    from research.engine import EngineConfig
    from research.errors import KitError

    with pytest.raises(KitError) as e:
        EngineConfig(**{field: value})
    assert (field in str(e.value) or "KV-cache type" in str(e.value)) and "\n" not in str(e.value)


def test_engine_config_keeps_none_meanings_and_shares_the_cli_ranges():
    from research.engine import EngineConfig, options
    from research.errors import KitError

    EngineConfig(n_threads=None, n_ubatch=None, use_mmap=None, chat_format=None)  # auto, decided later
    EngineConfig(n_ctx=options.CTX.lo, n_threads=1, n_batch=1, n_ubatch=1, use_mmap=False, kv_type="q8_0")
    EngineConfig(n_ctx=options.CTX.hi, n_threads=options.THREADS_MAX)
    for n_ctx in (options.CTX.lo - 1, options.CTX.hi + 1):  # one bound, refused in both places
        with pytest.raises(KitError):
            EngineConfig(n_ctx=n_ctx)
        with pytest.raises(argparse.ArgumentTypeError):
            options.CTX.arg(str(n_ctx))


# --- A full disk: what was written stays readable, the error is one line -----------------------------

FILL = """
import resource, sys
from research import jsonl
from research.errors import KitError

path, size = sys.argv[1], int(sys.argv[2])
try:
    for i in range(100):
        jsonl.append({"i": i, "pad": "x" * (size - 30)}, path)
except KitError as e:
    print(e, file=sys.stderr)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    jsonl.append({"i": "after"}, path)  # room again: appending goes on where it stopped
    sys.exit(3)
"""


def test_a_file_size_limit_cuts_no_record(tmp_path):
    """A real RLIMIT_FSIZE in a child: the record that crosses it is taken back, not left cut."""
    import resource

    from research import jsonl

    path, size = tmp_path / "records.jsonl", 100
    line = len(json.dumps({"i": 0, "pad": "x" * (size - 30)}, ensure_ascii=False)) + 1
    limit = 10 * line + line // 2  # the eleventh record gets half way, then EFBIG

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    r = subprocess.run(
        [sys.executable, "-c", FILL, str(path), str(size)],
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=60,
    )
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert "size limit" in r.stderr and "not saved" in r.stderr
    records, bad = jsonl.read(path)
    assert bad == 0 and [rec["i"] for rec in records] == [*range(10), "after"]
    assert path.read_bytes().endswith(b"}\n") and path.stat().st_size == 10 * line + len(b'{"i": "after"}\n')


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_full_disk_is_one_line():
    """/dev/full answers every write with a real ENOSPC."""
    from research import jsonl
    from research.errors import KitError

    with pytest.raises(KitError, match="the disk is full: the record was not saved to /dev/full"):
        jsonl.append({"question": "?"}, "/dev/full")

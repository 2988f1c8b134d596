"""Benchmarks print figures and ratios; tests check their shape and sense, never a speed."""

import csv
import json
from pathlib import Path

import pytest
from fakes import FakeBackend
from test_cli import run

from research import device
from research.engine import Engine, EngineConfig, Sampling, conversation
from research.engine.prompts import STOPS, ChatFormat
from research.measure import bench, chat_timing
from research.measure import compare as bench_compare

ROOT = Path(__file__).resolve().parents[1]
LLAMA_BENCH_FIELDS = {
    "model_filename",
    "n_prompt",
    "n_gen",
    "n_threads",
    "avg_ts",
    "stddev_ts",
    "samples_ts",
    "build_commit",
}


def test_paired_ratio_is_the_median_of_pairs():
    assert bench_compare.paired_ratio([90, 120], [100, 120]) == pytest.approx(0.95)
    assert bench_compare.paired_ratio([50, 100, 300], [100, 100, 100]) == pytest.approx(
        1.0
    )  # an outlier pair is outvoted


def test_the_chat_path_measures_every_token_of_a_model_that_ends_at_once():
    """A base model ends its text early: a benchmark must still decode `tg` tokens, past its
    end-of-text token and past the format's stop string alike (issue: "the chat path stopped
    after 6 of 8 tokens")."""
    engine = Engine(FakeBackend(["Hi<|im_end|>"]), ChatFormat("chatml", stops=STOPS["chatml"]), "fake")
    row = chat_timing.kit_once(engine, pp=64, tg=32, rep=0)  # raised KitError before
    assert row["tg"] > 0 and row["tg_depth"] > 0
    _, stats = engine.answer(conversation(chat_timing.TG_QUESTION), Sampling(max_tokens=32, ignore_eos=True))
    assert (stats.completion_tokens, stats.stop_reason) == (32, "length")
    _, stats = engine.answer(conversation(chat_timing.TG_QUESTION), Sampling(max_tokens=32))
    assert stats.completion_tokens == len("Hi<|im_end|>")  # a chat stops there, as it should


@pytest.mark.model
def test_the_chat_path_measures_a_real_model_that_answers_with_its_end_token(tmp_path):
    """The same through llama.cpp: a gemma3-shaped file whose every answer is <eos> at once."""
    from fakes import gemma3_model_gguf

    path = gemma3_model_gguf(tmp_path / "base.F16.gguf", n_layer=3, n_embd=128, ends_at_once=True)
    engine = Engine.load(path, EngineConfig(n_ctx=512, n_threads=2))
    _, stats = engine.answer(conversation(chat_timing.TG_QUESTION), Sampling(temperature=0, max_tokens=8))
    assert stats.completion_tokens == 0  # a chat answer ends at once
    row = chat_timing.kit_once(engine, pp=32, tg=8, rep=0)
    assert row["tg"] > 0
    engine.close()


@pytest.mark.model
def test_prompt_of_builds_a_prompt_of_the_asked_length():
    engine = Engine.load(None, EngineConfig(n_ctx=1024, n_threads=2))
    for n in (64, 300):
        msgs = chat_timing.prompt_of(engine, n, "salt")
        assert abs(len(engine.prompt_tokens(msgs)) - n) <= 2
    parts = chat_timing.ttft_parts(engine, reps=2)
    assert 20 <= parts["prompt_tokens"] <= 60
    inner = parts["format_s"] + parts["tokenize_s"]
    assert 0 < inner + parts["prompt_eval_s"] + parts["first_sample_s"] <= parts["ttft_s"]
    engine.close()


@pytest.mark.model
def test_bench_sweeps_threads_with_llama_bench_field_names(tmp_path):
    out, csv_out = tmp_path / "rows.json", tmp_path / "rows.csv"
    r = run(
        "bench",
        "--threads",
        "1,2",
        "--reps",
        "2",
        "--pp",
        "64",
        "--tg",
        "16",
        "--no-llama-bench",
        "--json",
        str(out),
        "--csv",
        str(csv_out),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert [(row["n_threads"], row["test"]) for row in rows] == [
        (1, "pp64"),
        (1, "tg16"),
        (2, "pp64"),
        (2, "tg16"),
    ]
    for row in rows:
        assert LLAMA_BENCH_FIELDS <= set(row) and row["avg_ts"] > 0 and len(row["samples_ts"]) == 2
        assert row["model_n_params"] > 1e8 and row["model_size"] < Path(row["model_filename"]).stat().st_size
        assert 0 < row["ttft_ms"] < 10_000 and row["peak_rss_mb"] * 2**20 > row["model_size"]
    assert rows[0]["n_prompt"] > 32  # the prompt tokens actually evaluated, not the next prompt's
    with open(csv_out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(t["avg_ts"]) for t in table] == pytest.approx([row["avg_ts"] for row in rows])
    assert len(table[0]["samples_ts"].split()) == 2
    assert "pp64" in r.stdout and "ttft ms" in r.stdout
    r = run(
        "bench",
        "--reps",
        "1",
        "--pp",
        "16",
        "--tg",
        "4",
        "--no-llama-bench",
        "--csv",
        str(tmp_path / "no" / "x.csv"),
    )
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: cannot write")
    # a prompt shorter than the chat template and a one-word question cannot be measured as asked
    r = run("bench", "--reps", "1", "--pp", "1", "--tg", "4", "--no-llama-bench")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "shorter than the chat path's shortest prompt" in last and "--pp 3" in last


@pytest.mark.model
def test_bench_runs_llama_bench_beside_the_kit_when_built(tmp_path, llama_tools):
    """llama_tools (conftest): one build call for every tool the tests run."""
    rows = bench.sweep(None, [2], pp=48, tg=8, reps=1, progress=lambda s: None)
    assert {(row["backend"], row["test"]) for row in rows} == {
        ("kit", "pp48"),
        ("kit", "tg8"),
        ("llama-bench", "pp48"),
        ("llama-bench", "tg8"),
    }
    kit, lb = rows[0], next(row for row in rows if row["backend"] == "llama-bench")
    for key in ("model_filename", "model_size", "model_n_params", "n_threads", "build_commit"):
        assert kit[key] == lb[key], key  # the two sides describe the same file and build alike


@pytest.mark.model
def test_compare_runs_llama_bench_and_the_chat_path_side_by_side(tmp_path, llama_tools):
    out = tmp_path / "compare.json"
    r = run("bench", "--compare", "--reps", "2", "--pp", "64", "--tg", "16", "--json", str(out), timeout=1800)
    assert r.returncode == 0, r.stderr
    assert "ratio" in r.stdout and "roofline" in r.stdout and "time to first token" in r.stdout
    res = json.loads(out.read_text())
    assert res["ratio_tg"] > 0 and res["ratio_pp"] > 0 and res["n_threads"] >= 1
    assert res["llama_cpp_commit"] not in ("", "unknown")
    d = res["tg_depth"]  # the chat path's answers start after its prompt; llama-bench -d matches it
    sides = {(row["backend"], row["test"], row["n_depth"]) for row in res["rows"]}
    assert {s for s in sides if s[1] != "pp64"} == {
        ("llama-bench", "tg16", 0),
        ("llama-bench", f"tg16@d{d}", d),
        ("kit", f"tg16@d{d}", d),
    }
    assert ("llama-bench", "pp64", 0) in sides and ("kit", "pp64") in {s[:2] for s in sides}
    assert 10 < d < 64 and res["ratio_tg_depth0"] > 0 and len(res["ratio_tg_pairs"]) == 2
    assert f"tg16@d{d}" in r.stdout and "tg16@d0" in r.stdout
    for row in res["rows"]:
        assert LLAMA_BENCH_FIELDS <= set(row) and all(s > 0 for s in row["samples_ts"])
    assert res["roofline"]["read_bandwidth_gbs"] > 0 and res["roofline"]["roofline_tps"] > 0
    assert res["memory"]["peak_rss_mb"] > res["memory"]["file_mb"]  # the weights are resident
    assert res["cold_start"]["command_to_answer_s"] > res["cold_start"]["ttft_s"] > 0
    kit = next(row for row in res["rows"] if row["backend"] == "kit")
    assert kit["n_ubatch"] == 512 and kit["load_mode"] == "mmap"  # the bundled Q4_1: nothing repacks
    # The page's process: the same engine plus Gradio, reported apart from the engine alone.
    page = res["page"]
    assert page["peak_rss_mb"] > res["cold_start"]["peak_rss_mb"] and page["adds_mb"] > 20
    assert "chat page:" in r.stdout and f"adds {page['adds_mb']:.0f} MB" in r.stdout


@pytest.mark.model
def test_compare_runs_on_another_architecture(tmp_path, llama_tools):
    """Not tuned to one file: a qwen2-shaped Q4_K_M goes through the same comparison."""
    from fakes import random_model_gguf

    from research.models import quantize

    src = random_model_gguf(tmp_path / "qwen2.F16.gguf", n_layer=4, n_embd=256, n_ff=768)
    [q] = quantize.quantize(src, "Q4_K_M", tmp_path, progress=lambda s: None)
    res = bench_compare.compare(str(q.path), 2, pp=64, tg=8, reps=1, progress=lambda s: None)
    assert res["model_filename"] == str(q.path) and res["ratio_tg"] > 0 and res["ratio_pp"] > 0
    assert {row["backend"] for row in res["rows"]} == {"kit", "llama-bench"}
    assert res["memory"]["peak_rss_mb"] > 0 and len(res["ratio_tg_pairs"]) == 1
    kit = next(row for row in res["rows"] if row["backend"] == "kit")
    repacks = device.cpu_kind() != "other"  # Q4_K is repacked on x86 with AVX2 and on ARM
    assert kit["load_mode"] == ("none" if repacks else "mmap") and kit["model_type"].startswith("qwen2")
    assert res["page"]["peak_rss_mb"] > res["memory"]["file_mb"]


def test_the_bench_table_gives_each_file_s_size_in_the_kit_s_mb(tmp_path):
    """The file's size, as every table of the kit gives it, not llama-bench's tensor bytes."""
    f = tmp_path / "m.gguf"
    f.write_bytes(b"\0" * (3 * 2**20))
    row = {"model_filename": str(f), "model_size": 10**6, "backend": "kit", "n_threads": 2, "test": "tg16"}
    table = bench.format_rows([row | {"avg_ts": 10.0, "stddev_ts": 0.5}]).splitlines()
    assert "file MB" in table[0] and table[1].split()[1] == "3.0"

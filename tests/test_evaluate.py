"""Evaluation: loading any question set, scoring, resumable runs that survive kill -9."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeBackend

from research.engine import Engine
from research.engine.prompts import STOPS, ChatFormat
from research.errors import KitError
from research.evaluation import run as evaluate

ROOT = Path(__file__).resolve().parents[1]


def test_normalize_and_score():
    assert evaluate.normalize("  The Nile.") == "nile"
    assert evaluate.normalize("Gabriel García Márquez") == "gabriel garcia marquez"
    s = evaluate.score("The capital of Australia is Canberra.", ["Canberra"])
    assert s["contains"] == 1 and s["exact_match"] == 0 and 0 < s["f1"] < 1 and not s["hallucinated"]
    assert evaluate.score("Canberra", ["Canberra"])["exact_match"] == 1
    assert evaluate.score("It was John F. Kennedy.", ["George Washington", "Washington"])["hallucinated"]
    refusal = evaluate.score("I'm not sure, I don't know that.", ["Paris"])
    assert refusal["refused"] and not refusal["hallucinated"]
    assert evaluate.score("A cat sat.", ["C"])["contains"] == 0  # short aliases match whole tokens only
    assert evaluate.score("It is written in C.", ["C"])["contains"] == 1


def test_wilson_interval():
    lo, hi = evaluate.wilson(5, 10)
    assert lo == pytest.approx(0.237, abs=1e-3) and hi == pytest.approx(0.763, abs=1e-3)


def test_kit_set_loads_and_a_slice_spans_the_topics():
    qs = evaluate.load_questions()
    assert len(qs) >= 300
    assert len({q["topic"] for q in qs[:9]}) == 9  # --limit 9 already asks one of each topic


def test_nq_open_shaped_file_works_as_is(tmp_path):
    f = tmp_path / "nq.jsonl"
    f.write_text(
        '{"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]}\n'
        '{"question": "capital of peru", "answer": ["Lima"]}\n'
    )
    qs = evaluate.load_questions(str(f))
    assert [q["references"] for q in qs] == [["William Shakespeare", "Shakespeare"], ["Lima"]]
    assert len({q["id"] for q in qs}) == 2 and {q["topic"] for q in qs} == {"all"}


def test_csv_with_named_columns(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("prompt,gold\nWhat is 2+2?,4\n")
    qs = evaluate.load_questions(str(f), evaluate.Columns(question="prompt", answer="gold"))
    assert qs[0]["question"] == "What is 2+2?" and qs[0]["references"] == ["4"]


@pytest.mark.parametrize(
    "content, name, match",
    [
        ('{"prompt": "x", "gold": "y"}\n', "q.jsonl", "no column 'question'"),
        ("", "q.jsonl", "empty"),
        ("x", "q.txt", ".jsonl, .json, .csv or .parquet"),
    ],
)
def test_bad_question_files(tmp_path, content, name, match):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(KitError, match=match):
        evaluate.load_questions(str(f))


def fake_engine(n_ctx=400, name="fake", answers=("Paris.", "I don't know.", "Rome")):
    e = Engine(FakeBackend(list(answers), n_ctx=n_ctx), ChatFormat("chatml", stops=STOPS["chatml"]), name)
    e.__dict__["sha256"] = f"{name}-sha"  # a stand-in file hash (cached_property's slot)
    return e


def questions(n=6):
    return [
        {"id": f"q{i}", "question": f"Question {i}?", "references": ["Paris"], "topic": "t"} for i in range(n)
    ]


def test_two_models_and_two_system_prompts_in_one_file_stay_apart(tmp_path):
    out = tmp_path / "records.jsonl"
    qs = questions()
    a = evaluate.run(fake_engine(name="a", answers=["Paris."]), qs, out, progress=False)
    b = evaluate.run(fake_engine(name="b", answers=["Rome."]), qs, out, progress=False)
    c = evaluate.run(fake_engine(name="a", answers=["Paris."]), qs, out, progress=False, system="Be terse.")
    assert len(a) == len(b) == len(c) == 6  # each run answered everything, none skipped as "done"
    assert len(out.read_text().splitlines()) == 18
    assert len({r["run"] for r in a + b + c}) == 3 and all(r["run"] == a[0]["run"] for r in a)
    runs = evaluate.summarize_file(out)
    by_model = {(r["provenance"]["model"], r["provenance"]["system"]): r["summary"] for r in runs}
    assert by_model[("a", evaluate.SYSTEM)]["contains"] == 1.0 and by_model[("a", evaluate.SYSTEM)]["n"] == 6
    assert by_model[("b", evaluate.SYSTEM)]["contains"] == 0.0 and by_model[("b", evaluate.SYSTEM)]["n"] == 6
    assert by_model[("a", "Be terse.")]["n"] == 6
    again = evaluate.run(fake_engine(name="b", answers=["Lyon."]), qs, out, progress=False)
    assert [r["answer"] for r in again] == ["Rome."] * 6  # the same run resumes: nothing asked twice
    assert len(out.read_text().splitlines()) == 18


class FlakyBackend(FakeBackend):
    """Fails the first time it is asked about "flaky", as a transient fault would."""

    failed = False

    def generate(self, tokens, sampling):
        if "flaky" in "".join(chr(t) for t in tokens) and not self.failed:
            self.failed = True
            raise KitError("llama.cpp could not evaluate the next token (llama_decode failed)")
        return super().generate(tokens, sampling)


def test_errors_are_retried_when_their_cause_may_have_changed(tmp_path):
    out = tmp_path / "records.jsonl"
    qs = [*questions(2), {"id": "f", "question": "A flaky one?", "references": ["Paris"], "topic": "t"}]
    engine = Engine(FlakyBackend(["Paris."]), ChatFormat("chatml", stops=STOPS["chatml"]), "fake")
    engine.__dict__["sha256"] = "x"
    first = evaluate.run(engine, qs, out, progress=False)
    assert [r["error"] is not None for r in first] == [False, False, True]
    second = evaluate.run(engine, qs, out, progress=False)
    assert [r["error"] for r in second] == [None, None, None]
    assert len(out.read_text().splitlines()) == 4  # only the error was asked again
    [run] = evaluate.summarize_file(out)
    assert run["summary"]["n"] == 3 and run["summary"]["errors"] == 0  # the retry replaced the error


def test_records_say_what_produced_them(tmp_path):
    out = tmp_path / "records.jsonl"
    [rec, *_] = evaluate.run(fake_engine(), questions(1), out, progress=False)
    for key in ("model", "model_sha256", "prompt_format", "system", "sampling", "n_ctx", "llama_cpp", "run"):
        assert rec[key] not in (None, ""), key
    assert rec["sampling"]["temperature"] == 0 and rec["sampling"]["seed"] == 0


def test_out_must_be_a_file(tmp_path):
    with pytest.raises(KitError, match="is a folder"):
        evaluate.run(fake_engine(), questions(1), tmp_path, progress=False)


def test_run_is_resumable_and_never_duplicates(tmp_path):
    out = tmp_path / "records.jsonl"
    qs = [
        {"id": f"q{i}", "question": f"Question {i}?", "references": ["Paris"], "topic": "t"} for i in range(8)
    ]
    qs.append({"id": "long", "question": "word " * 500, "references": ["x"], "topic": "t"})
    evaluate.run(fake_engine(), qs, out, limit=5, progress=False)
    assert len(out.read_text().splitlines()) == 5
    records = evaluate.run(fake_engine(), qs, out, progress=False)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(q["id"] for q in qs) and len(ids) == len(set(ids))
    long = next(r for r in records if r["id"] == "long")
    assert long["error"] and "too long" in long["error"] and long["scores"] is None
    summary = evaluate.summarize(records)
    assert summary["n"] == 8 and summary["errors"] == 1 and len(records) == 9
    assert summary["refused"] > 0 and summary["contains"] > 0
    assert set(summary["per_topic"]) == {"t"}


@pytest.mark.model
def test_eval_summary_and_kill_9_resume(tmp_path):
    out = tmp_path / "run.jsonl"
    cmd = [sys.executable, "-m", "research", "eval", "--limit", "36", "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_at = len(out.read_text().splitlines())
    assert 4 <= killed_at < 36
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n"] == 36 and "exact_match" in summary and "f1" in summary
    assert len(summary["per_topic"]) == 9 and all(
        "exact_match" in t and "f1" in t for t in summary["per_topic"].values()
    )
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip().endswith("}")]
    assert len(ids) == len(set(ids)) == 36  # resumed, nothing lost, nothing twice


def test_hub_only_when_asked_and_a_failure_is_one_line(tmp_path):
    """hf:NAME goes to the hub; here HF_ENDPOINT is a closed loopback port, set before anything imports."""
    from test_network import audited_env, loopback

    env, log = audited_env(tmp_path)
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "research",
            "eval",
            "--questions",
            "hf:nq_open",
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=os.environ | env,
    )
    assert r.returncode == 1 and "could not fetch 'nq_open' from the Hugging Face hub" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    off = [
        e
        for e in events
        if e["event"] == "socket.connect"
        and not isinstance(e["addr"], str)
        and not loopback(str(e["addr"][0]))
    ]
    assert any(e["event"] == "start" for e in events) and off == []


@pytest.mark.model
def test_eval_cli_two_models_two_system_prompts_one_file(tmp_path):
    from fakes import random_model_gguf

    other = random_model_gguf(tmp_path / "other.gguf", n_layer=2, n_embd=64, n_ff=128, n_head=2)
    out = tmp_path / "mixed.jsonl"
    base = [sys.executable, "-m", "research", "eval", "--limit", "3", "--out", str(out), "--json"]
    runs = [[], ["--system", "Reply with one word."], ["--model", str(other)]]
    summaries = []
    for extra in runs:
        r = subprocess.run(base + extra, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert r.returncode == 0, r.stderr
        summaries.append(json.loads(r.stdout))
    assert [s["n"] for s in summaries] == [3, 3, 3]  # no run found the others' answers "done"
    assert len({s["run"] for s in summaries}) == 3
    assert len(summaries[-1]["other_runs"]) == 2
    models = {r["provenance"]["model"] for r in summaries[-1]["other_runs"]}
    assert models == {"smollm2-135m-q4_1"}
    again = subprocess.run(base + runs[1], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert json.loads(again.stdout)["run"] == summaries[1]["run"]
    assert len(out.read_text().splitlines()) == 9  # the rerun resumed: nothing asked twice


def test_records_carry_their_confidence_and_official_scores(tmp_path):
    e = Engine(
        FakeBackend(["The capital is Paris.", "Lyon, I think."], n_ctx=400, logprobs=[-0.2, -1.0]),
        ChatFormat("chatml", stops=STOPS["chatml"]),
        "fake",
    )
    e.__dict__["sha256"] = "fake-sha"
    recs = evaluate.run(e, questions(4), tmp_path / "r.jsonl", progress=False)
    right, hedged = recs[0], recs[1]
    assert right["confidence"]["signals"]["mean_logprob"] == pytest.approx(-0.2)
    assert right["confidence"]["confidence_method"] == "free" and "signal_s" in right["confidence"]["costs"]
    assert right["scores"]["short_answer"] == "Paris" and right["scores"]["em_official_short"] == 1.0
    assert hedged["scores"]["hedged"] and not hedged["scores"]["hallucinated"]
    s = evaluate.summarize(recs)
    assert s["hedged"] == 0.5 and s["hallucinated"] == 0.0 and s["em_official_short"] == 0.5
    with pytest.raises(KitError, match="unknown confidence signals"):
        evaluate.run(e, questions(1), tmp_path / "r.jsonl", progress=False, extra=("telepathy",))


@pytest.mark.model
def test_a_greedy_answer_is_the_same_asked_first_or_after_another(tmp_path):
    # A system prompt long enough that a whole prompt is 64 rows or more: evaluated whole, llama.cpp
    # takes other attention kernels than for the few rows a cached prefix leaves, and without a
    # reset before each question spo-001 came out "won by the United States" after cul-001 and
    # "won by Australia" on its own.
    from research.engine import EngineConfig

    system = evaluate.SYSTEM + " " + "Be accurate and brief, and give the answer in plain words. " * 5
    by_id = {q["id"]: q for q in evaluate.load_questions()}
    first, then = by_id["cul-001"], by_id["spo-001"]
    engine = Engine.load(None, EngineConfig(n_ctx=1024, n_threads=1))
    after = evaluate.run(engine, [first, then], tmp_path / "a.jsonl", system=system, progress=False)
    fresh = Engine.load(None, EngineConfig(n_ctx=1024, n_threads=1))  # nothing cached at all
    alone = evaluate.run(fresh, [then], tmp_path / "b.jsonl", system=system, progress=False)
    assert after[1]["answer"] == alone[0]["answer"]
    assert len(engine.prompt_tokens(evaluate.conversation(then["question"], system))) >= 64


@pytest.mark.model
def test_eval_as_page_answers_as_the_page_does(tmp_path):
    from research.engine import CHAT_SYSTEM, Sampling
    from research.page.messages import DEFAULT_SYSTEM

    out = tmp_path / "page.jsonl"
    cmd = [sys.executable, "-m", "research", "eval", "--limit", "2", "--out", str(out), "--json"]
    r = subprocess.run(cmd + ["--as-page"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and CHAT_SYSTEM == DEFAULT_SYSTEM
    for rec in records:  # the page's prompt and sampling, with the seed fixed: a rerun resumes
        assert rec["system"] == DEFAULT_SYSTEM
        assert rec["sampling"] == dataclasses.asdict(Sampling(seed=0))
        assert rec["confidence"]["signals"]["type_match"] in (0.0, 1.0)
    for other in (["--system", "x"], ["--signal-cost"], ["--library", "kit"], ["--from-ratings"]):
        bad = subprocess.run(cmd + ["--as-page", *other], capture_output=True, text=True, cwd=ROOT)
        assert bad.returncode != 0 and "--as-page" in bad.stderr and bad.stderr.count("\n") == 1

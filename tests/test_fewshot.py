"""Question formats for base models: the completion format and lm-evaluation-harness's nq_open layout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeBackend

from research.engine import Engine, prompts
from research.errors import KitError
from research.evaluation import run as evaluate

ROOT = Path(__file__).resolve().parents[1]


def test_nq_open_layout_as_lm_evaluation_harness_builds_it():
    # nq_open.yaml: description "Answer these questions:\n\n", doc_to_text "Q: {{question}}?\nA:",
    # target_delimiter " ", fewshot_delimiter "\n"; an example's target is its first answer.
    fmt = prompts.fewshot_format([("who wrote hamlet", "William Shakespeare"), ("capital of peru", "Lima")])
    prompt = fmt.render(
        [{"role": "system", "content": "ignored"}, {"role": "user", "content": "who painted guernica"}]
    )
    assert prompt == (
        "Answer these questions:\n\n"
        "Q: who wrote hamlet?\nA: William Shakespeare\n"
        "Q: capital of peru?\nA: Lima\n"
        "Q: who painted guernica?\nA:"
    )
    assert fmt.stops == ("\n", ".", ",")
    assert prompts.fewshot_format([]).render([{"role": "user", "content": "Is it?"}]) == (
        "Answer these questions:\n\nQ: Is it?\nA:"  # a question that has its mark keeps only one
    )


def test_other_examples_make_another_format_and_so_another_run():
    a = prompts.fewshot_format([("q one", "a")])
    b = prompts.fewshot_format([("q two", "a")])
    assert a.name != b.name and a.name.startswith("nq-open-1shot-")
    assert prompts.FORMATS[a.name] is not prompts.FORMATS[b.name]


def test_the_kits_examples_are_in_none_of_its_questions():
    shots = prompts.load_shots()
    assert len(shots) == 8
    asked = {evaluate.normalize(q["question"]) for q in evaluate.load_questions()}
    answers = {evaluate.normalize(q["references"][0]) for q in evaluate.load_questions()}
    for q, a in shots:
        assert evaluate.normalize(q) not in asked and evaluate.normalize(a) not in answers


def test_shots_from_a_file_and_a_bad_file(tmp_path):
    f = tmp_path / "shots.jsonl"
    f.write_text('{"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]}\n')
    assert prompts.load_shots(str(f)) == [("who wrote hamlet", "William Shakespeare")]
    f.write_text('{"q": 1}\n')
    with pytest.raises(KitError, match="cannot read examples"):
        prompts.load_shots(str(f))


def test_a_few_shot_answer_is_cut_where_lm_evaluation_harness_cuts_it(tmp_path):
    fmt = prompts.fewshot_format(prompts.load_shots()[:2])
    engine = Engine(FakeBackend([" Lima, the capital.\nQ: next"]), fmt, "fake")
    engine.__dict__["sha256"] = "x"
    qs = [{"id": "q", "question": "capital of peru", "references": ["Lima"], "topic": "all"}]
    [rec] = evaluate.run(engine, qs, tmp_path / "r.jsonl", system="", progress=False)
    assert (
        rec["answer"] == "Lima" and rec["scores"]["em_lm_eval"] == 1.0 and rec["scores"]["em_official"] == 1.0
    )
    assert rec["prompt_format"] == fmt.name and rec["system"] == ""


@pytest.mark.model
def test_eval_fewshot_on_the_bundled_model(tmp_path):
    out = tmp_path / "fs.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "research",
        "eval",
        "--limit",
        "4",
        "--fewshot",
        "5",
        "--out",
        str(out),
        "--json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n"] == 4 and "em_lm_eval" in summary
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(
        rec["prompt_format"].startswith("nq-open-5shot-") and "\n" not in rec["answer"] for rec in records
    )

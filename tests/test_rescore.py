"""Records scored again when the scoring code changed (research.evaluation.rescore): a resumed
run, a file rewritten by `research rescore`, library records and their closed-book verdicts."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluate import fake_engine, questions

from research import jsonl
from research.errors import KitError
from research.evaluation import rescore
from research.evaluation import run as evaluate
from research.qa import scoring

ROOT = Path(__file__).resolve().parents[1]
#: Scores as an older scorer wrote them for "I'm not sure, but it is Paris.": a refusal, not right
#: (the hedge list once counted "I'm not sure" as refusing whatever followed).
STALE = {"contains": False, "em": False, "refused": True, "hallucinated": False, "hedged": False}


def test_the_fingerprint_is_the_scoring_codes_own(tmp_path, monkeypatch):
    key = rescore.scorer_key()
    assert len(key) == 12 and int(key, 16) >= 0
    source, copy = Path(scoring.__file__).read_bytes(), tmp_path / "scoring.py"
    copy.write_bytes(source + b"\n# one more line\n")
    monkeypatch.setattr(scoring, "__file__", str(copy))
    assert rescore.scorer_key.__wrapped__() != key  # any edit to the scoring code: another scorer
    copy.write_bytes(source)
    assert rescore.scorer_key.__wrapped__() == key


def test_a_stale_record_is_scored_again_and_a_current_one_is_left_alone():
    old = {"id": "q", "answer": "I'm not sure, but it is Paris.", "references": ["Paris"], "question": "?"}
    old |= {"scores": STALE, "scorer": "000000000000"}
    current = old | {"id": "r", "scores": {"contains": "kept as it is"}, "scorer": rescore.scorer_key()}
    error = {"id": "e", "answer": None, "references": ["x"], "scores": None, "error": "too long"}
    records, changed = rescore.rescore([old, current, error])
    assert [r["id"] for r in changed] == ["q"]
    assert records[0]["scores"] == scoring.score(old["answer"], ["Paris"], "?")
    assert records[0]["scores"]["contains"] == 1 and records[0]["scores"]["refused"] == 0
    assert records[0]["scorer"] == rescore.scorer_key() and old["scores"] is STALE  # a new dict
    assert records[1] is current and records[2] is error
    # A record written before records kept their scorer is rescored too.
    no_key = {k: v for k, v in old.items() if k != "scorer"}
    assert rescore.rescore([no_key])[1][0]["scores"]["contains"] == 1


def test_a_stale_record_gains_the_signals_its_answer_s_words_give():
    signals = {"mean_logprob": -0.5}  # written before type_match existed
    old = {"id": "q", "answer": "It was painted long ago.", "references": ["Leonardo"]}
    old |= {"question": "Who painted the Mona Lisa?", "scores": STALE, "scorer": "0" * 12}
    old |= {"confidence": {"signals": signals, "confidence": None}}
    (new,) = rescore.rescore([old])[1]
    assert new["confidence"]["signals"] == {"mean_logprob": -0.5, "type_match": 0.0}  # no name
    assert old["confidence"]["signals"] is signals and "type_match" not in signals  # a new dict
    named = old | {"answer": "Leonardo da Vinci."}
    assert rescore.rescore([named])[1][0]["confidence"]["signals"]["type_match"] == 1.0
    bare = {k: v for k, v in old.items() if k != "confidence"}  # no signals kept: none made up
    assert "confidence" not in rescore.rescore([bare])[1][0]
    # scored by this code already (a kit between the two changes), the signal still missing
    current = old | {"scores": new["scores"], "scorer": rescore.scorer_key()}
    assert rescore.rescore([current])[1][0]["confidence"]["signals"]["type_match"] == 0.0
    assert rescore.rescore([new])[1] == []  # nothing left to do


def test_library_records_rescored_with_their_closed_book_verdict():
    setting = {"run": "r1", "library_key": "L", "k": 3, "threshold": 0.5, "confidence_fn": "logprob"}
    setting |= {"grounded_system": "S", "passage_order": "best last"}
    never = {"id": "q", "mode": "never", "answer": "It is Paris.", "right": False, "closed_right": None}
    always = {"id": "q", "mode": "always", "answer": "Lyon [1].", "right": True, "closed_right": False}
    other = {"id": "q", "mode": "always", "answer": "Lyon.", "right": False, "closed_right": False}
    refs = {"references": ["Paris"], "scorer": "0"}
    records, changed = rescore.rescore(
        [never | setting | refs, always | setting | refs, other | setting | refs | {"k": 5}]
    )
    assert len(changed) == 3
    assert records[0]["right"] is True  # the closed-book answer holds the reference
    assert records[1]["right"] is False and records[1]["closed_right"] is True  # lost, not gained
    assert records[2]["closed_right"] is False  # another setting (k=5): no closed-book record of its own


def test_a_resumed_run_scores_its_records_again_and_writes_them(tmp_path):
    out = tmp_path / "records.jsonl"
    qs = questions(3)
    first = evaluate.run(fake_engine(answers=["I'm not sure, but it is Paris."]), qs, out, progress=False)
    assert all(r["scorer"] == rescore.scorer_key() and r["scores"]["contains"] for r in first)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    out.write_text("".join(json.dumps(r | {"scores": STALE, "scorer": "0ld"}) + "\n" for r in lines))
    assert evaluate.summarize_file(out)[0]["summary"]["contains"] == 1.0  # read as this code scores
    again = evaluate.run(fake_engine(answers=["Rome."]), qs, out, progress=False)
    assert [r["answer"] for r in again] == ["I'm not sure, but it is Paris."] * 3  # not asked again
    assert all(r["scores"]["contains"] and not r["scores"]["refused"] for r in again)
    written, _ = jsonl.read(out)
    assert len(written) == 6 and all(r["scorer"] == rescore.scorer_key() for r in written[3:])
    assert evaluate.records_by_run(written)[again[0]["run"]][0]["scores"]["contains"] == 1


def test_rescore_file_rewrites_in_place_privately_and_keeps_the_rest(tmp_path):
    out = tmp_path / "records.jsonl"
    qs = questions(2)
    evaluate.run(fake_engine(answers=["I'm not sure, but it is Paris.", "Rome."]), qs, out, progress=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    stale = [lines[0] | {"scores": STALE, "scorer": "0ld"}, lines[1]]
    out.write_text("".join(json.dumps(r) + "\n" for r in stale) + '{"cut off')
    os.chmod(out, 0o644)
    got = rescore.rescore_file(out)
    assert got == {"records": 2, "rescored": 1, "changed": 1, "damaged": 1}
    after, bad = jsonl.read(out)
    assert bad == 0 and after[0]["scores"]["contains"] == 1 and after[1] == lines[1]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    before = out.read_bytes()
    assert rescore.rescore_file(out) == {"records": 2, "rescored": 0, "changed": 0, "damaged": 0}
    assert out.read_bytes() == before


def test_rescore_file_refuses_a_file_being_written(tmp_path, monkeypatch):
    out = tmp_path / "records.jsonl"
    out.write_text(
        json.dumps({"id": "q", "answer": "Paris", "references": ["Paris"], "scores": STALE}) + "\n"
    )
    real = jsonl.read

    def read_while_appended(path):
        got = real(path)
        with open(path, "a") as f:
            f.write(json.dumps({"id": "r"}) + "\n")  # an evaluation appends meanwhile
        return got

    monkeypatch.setattr(jsonl, "read", read_while_appended)
    with pytest.raises(KitError, match="grew while it was read"):
        rescore.rescore_file(out)
    assert len(out.read_text().splitlines()) == 2  # nothing lost
    with pytest.raises(KitError, match="no records file"):
        rescore.rescore_file(tmp_path / "missing.jsonl")


def test_the_rescore_command(tmp_path):
    out = tmp_path / "records.jsonl"
    out.write_text(
        json.dumps({"id": "q", "answer": "Paris.", "references": ["Paris"], "scores": STALE}) + "\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "research", "rescore", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert f"{out}: 1 records, 1 scored again" in done.stdout and "1 changed right/wrong" in done.stdout
    assert json.loads(out.read_text())["scores"]["contains"] == 1

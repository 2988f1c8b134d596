"""Ratings: one append-only format, readable after a crash, inert in spreadsheets."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from research.errors import KitError
from research.ratings import store as ratings

PROVENANCE = {"model": "smollm2-135m-q4_1", "model_sha256": "ab" * 32, "sampling": {"temperature": 0}}


def record(**kw):
    args = {"thumbs": "up"} | kw
    return ratings.make_record("Capital of France?", "Paris.", PROVENANCE, **args)


def test_append_and_read_back(tmp_path):
    path = tmp_path / "r.jsonl"
    ratings.append(record(), path)
    ratings.append(record(thumbs=None, score=2, verdict="hallucinated", comment="made up"), path)
    got, bad = ratings.read(path)
    assert bad == 0 and len(got) == 2
    assert got[0]["thumbs"] == "up" and got[1]["score"] == 2 and got[1]["verdict"] == "hallucinated"
    assert got[0]["question"] == "Capital of France?" and got[0]["model"] == "smollm2-135m-q4_1"
    assert got[0]["id"] != got[1]["id"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"thumbs": "sideways"}, "thumbs"),
        ({"thumbs": None, "score": 6}, "1 to 5"),
        ({"thumbs": None, "verdict": "meh"}, "verdict"),
        ({"thumbs": None}, "needs"),
    ],
)
def test_bad_ratings_refused(kw, match):
    with pytest.raises(KitError, match=match):
        record(**kw)


def test_cut_last_line_is_skipped_and_next_append_is_whole(tmp_path):
    path = tmp_path / "r.jsonl"
    ratings.append(record(), path)
    with open(path, "ab") as f:
        f.write(b'{"schema": 1, "question": "half a reco')  # what a crash mid-write leaves
    got, bad = ratings.read(path)
    assert len(got) == 1 and bad == 1
    ratings.append(record(comment="after the crash"), path)
    got, bad = ratings.read(path)
    assert [r["comment"] for r in got] == ["", "after the crash"] and bad == 1


WRITER = """
import sys
from research.ratings import store as ratings
long = "x" * 20000
i = 0
while True:
    ratings.append(ratings.make_record(f"q{i}", long, {"model": "m"}, score=3), sys.argv[1])
    i += 1
"""


def test_kill_9_during_writes_leaves_a_readable_file(tmp_path):
    path = tmp_path / "r.jsonl"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
    deadline = time.time() + 20
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 400_000):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    got, bad = ratings.read(path)
    assert len(got) >= 10 and bad <= 1
    assert [r["question"] for r in got] == [f"q{i}" for i in range(len(got))]  # none lost in between


def test_csv_export_neutralises_formulas(tmp_path):
    rec = ratings.make_record(
        '=HYPERLINK("http://x")', "+1 and @SUM(A1)", {"model": "m"}, score=1, comment="-2"
    )
    out = ratings.export_csv([rec], tmp_path / "r.csv")
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert rows[0]["question"].startswith("'=") and rows[0]["answer"].startswith("'+")
    assert rows[0]["comment"] == "'-2"
    assert ratings.neutralise("Paris") == "Paris"


def test_ratings_live_outside_the_checkout_and_old_ones_are_adopted(tmp_path, monkeypatch):
    checkout_data = tmp_path / "checkout" / "data"
    (checkout_data / "ratings").mkdir(parents=True)
    monkeypatch.setenv("RESEARCH_DATA_DIR", str(checkout_data))
    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESEARCH_RATINGS_FILE", raising=False)
    legacy = checkout_data / "ratings" / "ratings.jsonl"
    old = [record(comment=f"old {i}") for i in range(3)]
    for r in old:
        ratings.append(r, legacy)
    path = ratings.default_path()
    assert path == tmp_path / "home" / "ratings.jsonl"
    assert [r["id"] for r in ratings.read(path)[0]] == [r["id"] for r in old]  # nothing lost
    assert not legacy.exists() and (checkout_data / "ratings" / "ratings.adopted.jsonl").exists()
    ratings.append(record(comment="new"), ratings.default_path())  # adopted once, not again
    assert [r["comment"] for r in ratings.read(path)[0]] == ["old 0", "old 1", "old 2", "new"]
    # git clean -xfd removes the checkout's ignored files: the ratings are elsewhere.
    import shutil

    shutil.rmtree(tmp_path / "checkout")
    assert len(ratings.read(ratings.default_path())[0]) == 4


def test_schema_1_records_are_still_read(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"schema": 1, "id": "x", "question": "q", "answer": "a", "model": "m", "thumbs": "up"}\n'
    )
    got, bad = ratings.read(path)
    assert bad == 0 and got[0]["model"] == "m"


# --- Every field of a record, every message, every cell: written out ----------------------------

VERDICTS = "correct, partly correct, wrong, hallucinated, refused"
FULL = {
    "model": "m.gguf",
    "model_sha256": "cd" * 32,
    "prompt_format": "chatml",
    "system": "Be brief.",
    "n_ctx": 2048,
    "llama_cpp": "b1234",
    "run": "r1",
    "answer_id": "a1",
    "sampling": {"temperature": 0.0},
    "unrelated": "not copied",
}


def without_id_and_time(rec: dict) -> dict:
    assert len(rec["id"]) == 32 and int(rec["id"], 16) >= 0
    assert rec["time"].endswith("+00:00") and len(rec["time"]) == len("2026-01-01T00:00:00+00:00")
    return {k: v for k, v in rec.items() if k not in ("id", "time")}


def test_a_record_holds_exactly_these_fields():
    rec = ratings.make_record(
        "Q?", "A.", FULL, score=4, verdict="partly correct", comment="c", rater="r", question_id="q1"
    )
    assert without_id_and_time(rec) == {
        "schema": 2,
        "source": "chat",
        "question_id": "q1",
        "question": "Q?",
        "comment": "c",
        "rater": "r",
        "answer": "A.",
        "model": "m.gguf",
        "model_sha256": "cd" * 32,
        "prompt_format": "chatml",
        "system": "Be brief.",
        "n_ctx": 2048,
        "llama_cpp": "b1234",
        "run": "r1",
        "answer_id": "a1",
        "settings": {"temperature": 0.0},
        "thumbs": None,
        "score": 4,
        "verdict": "partly correct",
        "ab": None,
        "library": None,
    }
    assert set(rec) == set(ratings.FIELDS)
    older = {"model": "m", "settings": {"top_k": 1}}  # an evaluation record names them settings
    assert ratings.make_record("Q?", "A.", older, thumbs="down", source="eval")["settings"] == {"top_k": 1}
    assert ratings.make_record("Q?", "A.", {"model": "m"}, thumbs="down")["settings"] == {}


@pytest.mark.parametrize(
    "question, answer, provenance, kw, message",
    [
        ("Q", "A", FULL, {"thumbs": "sideways"}, "thumbs must be 'up' or 'down', not 'sideways'"),
        ("Q", "A", FULL, {"score": 0}, "a score is a whole number from 1 to 5, not 0"),
        ("Q", "A", FULL, {"score": 6}, "a score is a whole number from 1 to 5, not 6"),
        ("Q", "A", FULL, {"score": 2.5}, "a score is a whole number from 1 to 5, not 2.5"),
        ("Q", "A", FULL, {"verdict": "meh"}, f"verdict must be one of {VERDICTS}; not 'meh'"),
        ("Q", "A", FULL, {}, "a rating needs thumbs, a score or a verdict"),
        ("Q", "  ", FULL, {"thumbs": "up"}, "nothing to rate: there is no question and answer yet"),
        ("Q", None, FULL, {"thumbs": "up"}, "nothing to rate: there is no question and answer yet"),
        (" ", "A", FULL, {"thumbs": "up"}, "nothing to rate: there is no question and answer yet"),
        ("Q", "A", {"model": ""}, {"thumbs": "up"}, "a rating must say which model gave the answer"),
    ],
)  # fmt: skip
def test_a_malformed_rating_says_what_is_wrong(question, answer, provenance, kw, message):
    with pytest.raises(KitError) as e:
        ratings.make_record(question, answer, provenance, **kw)
    assert str(e.value) == message


@pytest.mark.parametrize("score", [1, 5])
def test_scores_at_the_ends_are_taken(score):
    assert ratings.make_record("Q", "A", FULL, score=score)["score"] == score


def test_an_ab_record():
    a = FULL | {"answer": "Paris.", "label": "left"}
    b = {"answer": "Lyon.", "model": "n.gguf"}
    rec = ratings.make_ab_record("Q?", (a, b), "tie", comment="c", rater="r", question_id="q")
    side_a = {"answer": "Paris.", "label": "left"} | {
        k: FULL[k] for k in ratings.PROVENANCE if k != "answer_id"
    }
    side_b = {"answer": "Lyon.", "label": None, "model": "n.gguf"} | dict.fromkeys(
        ["model_sha256", "prompt_format", "system", "n_ctx", "llama_cpp", "run"]
    )
    assert without_id_and_time(rec) == {
        "schema": 2,
        "source": "notebook-ab",
        "question_id": "q",
        "question": "Q?",
        "comment": "c",
        "rater": "r",
        "answer": None,
        **dict.fromkeys(ratings.PROVENANCE),
        "settings": {},
        "thumbs": None,
        "score": None,
        "verdict": None,
        "ab": {"shown": {"A": side_a, "B": side_b}, "result": "tie"},
    }
    with pytest.raises(KitError) as e:
        ratings.make_ab_record("Q?", (a, b), "C")
    assert str(e.value) == "an A/B result is one of A, B, tie, both wrong, not 'C'"
    for bad in ((a, {"answer": " ", "model": "n"}), (a, {"answer": "x", "model": ""}), ({"model": "m"}, b)):
        with pytest.raises(KitError) as e:
            ratings.make_ab_record("Q?", bad, "A")
        assert str(e.value) == "an A/B choice needs two answers and the models that gave them"
    with pytest.raises(KitError, match="nothing to rate"):
        ratings.make_ab_record("", (a, b), "A")


def test_read_keeps_known_schemas_and_counts_the_rest(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"schema": 2, "id": "a"}\n{"schema": 1, "id": "b"}\n{"schema": 3}\n{"id": "c"}\n[1]\n{cut\n'
    )
    assert ratings.read(path) == ([{"schema": 2, "id": "a"}, {"schema": 1, "id": "b"}], 4)


def test_the_default_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("RESEARCH_DATA_DIR", str(tmp_path / "kit"))
    monkeypatch.setenv("RESEARCH_RATINGS_FILE", "  ~/mine.jsonl ")
    assert ratings.default_path() == tmp_path / "mine.jsonl"
    ratings.append(record(comment="named"))
    assert [r["comment"] for r in ratings.read()[0]] == ["named"]
    monkeypatch.setenv("RESEARCH_RATINGS_FILE", "   ")
    assert ratings.default_path() == tmp_path / "data" / "ratings.jsonl"
    assert ratings.legacy_path() == tmp_path / "kit" / "ratings" / "ratings.jsonl"


def test_adopting_copies_each_record_once_and_says_so(tmp_path, capsys):
    legacy, path = tmp_path / "old" / "ratings.jsonl", tmp_path / "new.jsonl"
    assert ratings.adopt_legacy(legacy, path) == 0 and not path.exists()
    legacy.parent.mkdir()
    a, b = record(comment="a"), record(comment="b")
    ratings.append(a, legacy)
    ratings.append(b, legacy)
    ratings.append(a, path)  # already there: not copied twice
    assert ratings.adopt_legacy(legacy, path) == 1
    assert [r["comment"] for r in ratings.read(path)[0]] == ["a", "b"]
    assert not legacy.exists() and (tmp_path / "old" / "ratings.adopted.jsonl").is_file()
    assert capsys.readouterr().err == (
        f"ratings: 1 ratings moved from {legacy} to {path} (people's data lives outside the checkout now)\n"
    )


@pytest.mark.parametrize(
    "value, cell",
    [
        ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"), ("a=1", "a=1"), ("", ""), (-3, "'-3"), (4, "4"), ({"a": "é"}, '{"a": "é"}'),
        (None, "null"), (True, "true"),
    ],
)  # fmt: skip
def test_neutralise(value, cell):
    assert ratings.neutralise(value) == cell


def test_csv_export_is_every_field_in_order(tmp_path):
    rec = ratings.make_record("Q", "=A", FULL, thumbs="up")
    out = ratings.export_csv([rec], tmp_path / "r.csv")
    assert out == tmp_path / "r.csv"
    rows = list(csv.reader(open(out, encoding="utf-8", newline="")))
    assert rows[0] == list(ratings.FIELDS)
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert cells["answer"] == "'=A" and cells["schema"] == "2" and cells["settings"] == '{"temperature": 0.0}'
    assert cells["score"] == "" and cells["ab"] == "" and cells["thumbs"] == "up"
    assert open(out, "rb").read().count(b"\r\n") == 2  # csv's own line ends, one per row


def test_an_ab_record_takes_exactly_two_answers_and_no_comment_by_default():
    a, b = FULL | {"answer": "Paris."}, {"answer": "Lyon.", "model": "n.gguf"}
    assert ratings.make_ab_record("Q?", (a, b), "A")["comment"] == ""
    with pytest.raises(ValueError):
        ratings.make_ab_record("Q?", (a, b, b), "A")


def test_the_csv_is_utf8_whatever_the_locale(tmp_path):
    """Written here and by a child with a C locale (no UTF-8 mode, no coercion): the same bytes."""
    rec = ratings.make_record("Où?", "Zürich", FULL, thumbs="up")
    here = ratings.export_csv([rec], tmp_path / "here.csv").read_bytes()
    assert "Zürich".encode() in here
    code = (
        "import json, sys; from research.ratings import store; "
        "store.export_csv([json.loads(sys.argv[1])], sys.argv[2])"
    )
    env = os.environ | {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    r = subprocess.run(
        [sys.executable, "-c", code, json.dumps(rec), str(tmp_path / "child.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "child.csv").read_bytes() == here


def test_a_rooms_ratings_pooled_each_record_once(tmp_path):
    from research.evaluation import pairs
    from research.ratings.rater import tally

    a, b = FULL | {"answer": "Paris.", "label": "Q4_1"}, FULL | {"answer": "Lyon.", "label": "Q4_0"}
    files = []
    for person, results in (("ann", "AAB"), ("bob", "ABA"), ("cy", "A")):
        path = tmp_path / f"{person}.jsonl"
        for result in results:
            ratings.append(ratings.make_ab_record("Q?", (a, b), result, rater=person), path)
        files.append(path)
    with open(files[2], "a") as f:
        f.write('{"schema": 9}\n{cut\n')  # damaged lines are counted, not read
    pooled, bad = ratings.read_pooled([*files, files[0]])  # ann's file collected twice
    assert bad == 2 and len(pooled) == 7 and len({r["id"] for r in pooled}) == 7
    assert [r["rater"] for r in pooled] == ["ann"] * 3 + ["bob"] * 3 + ["cy"]  # in the files' order
    row = tally(pooled)[("Q4_0", "Q4_1")]
    assert row["wins"] == {"Q4_0": 2, "Q4_1": 5} and row["n"] == 7
    assert pairs.preference(row, "Q4_1")["decided"] == 7
    assert ratings.read_pooled([]) == ([], 0)

"""Ratings: one append-only format, readable after a crash, inert in spreadsheets."""

import csv
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

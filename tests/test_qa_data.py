"""The question set keeps its promises (fields, topics, dates, ids), read as the JSON Lines it is."""

import datetime
import json
from pathlib import Path

QA = Path(__file__).resolve().parents[1] / "data" / "qa"
FIELDS = {"id", "question", "answer", "aliases", "topic", "difficulty", "time_sensitive", "as_of", "source"}


class Rows(list):
    """The rows of JSON Lines files, with a column as a list (`rows["id"]`) and their field names."""

    def __getitem__(self, key):
        return [r.get(key) for r in self] if isinstance(key, str) else super().__getitem__(key)

    @property
    def column_names(self) -> list[str]:
        return list(dict.fromkeys(k for r in self for k in r))


def load(pattern: str) -> Rows:
    files = sorted(Path("/").glob(pattern.lstrip("/")))
    return Rows(json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip())


PREFIX = {
    "politics": "pol",
    "geography": "geo",
    "history": "his",
    "science": "sci",
    "technology": "tec",
    "health": "hea",
    "culture": "cul",
    "sports": "spo",
    "economy": "eco",
}


def test_question_set_is_whole_and_consistent():
    qa = load(str(QA / "*.jsonl"))
    assert len(qa) >= 300 and set(qa.column_names) == FIELDS
    assert len(set(qa["id"])) == len(qa) and len(set(qa["question"])) == len(qa)
    topics = set(qa["topic"])
    assert len(topics) >= 8 and topics <= set(PREFIX)
    assert set(qa["difficulty"]) == {"easy", "medium", "hard"}
    for row in qa:
        assert row["id"].startswith(PREFIX[row["topic"]] + "-"), row["id"]
        assert row["question"].strip().endswith("?") or row["question"].strip()[-1] in ".)", row["id"]
        assert row["answer"].strip() and row["answer"] not in row["aliases"], row["id"]
        assert row["source"].strip(), row["id"]
        if row["time_sensitive"]:
            as_of = row["as_of"]
            day = as_of.date() if isinstance(as_of, datetime.datetime) else datetime.date.fromisoformat(as_of)
            assert day <= datetime.date(2026, 11, 21), row["id"]
        else:
            assert row["as_of"] is None, row["id"]


def test_the_fresh_held_out_set_is_whole_and_asks_nothing_the_kits_set_asks():
    fresh = load(str(QA.parent / "heldout" / "*.jsonl"))
    qa = load(str(QA / "*.jsonl"))
    assert len(fresh) == 200 and set(fresh.column_names) == FIELDS
    assert len(set(fresh["id"])) == len(fresh) and len(set(fresh["question"])) == len(fresh)
    assert not set(fresh["id"]) & set(qa["id"])
    asked = {q.lower().strip() for q in qa["question"]}
    for row in fresh:
        assert row["id"].startswith("h-") and row["topic"] in PREFIX, row["id"]
        assert row["question"].lower().strip() not in asked, row["id"]
        assert row["answer"].strip() and row["answer"] not in row["aliases"], row["id"]
        # a reference inside its own question would be "right" whatever the model answered
        words = f" {row['question'].lower()} "
        assert all(f" {ref.lower()} " not in words for ref in [row["answer"], *row["aliases"]]), row["id"]
        assert not row["time_sensitive"] and row["as_of"] is None and row["source"].strip(), row["id"]

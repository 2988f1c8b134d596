"""The question set loads with datasets and keeps its promises (fields, topics, dates, ids)."""

import datetime
from pathlib import Path

from datasets import load_dataset

QA = Path(__file__).resolve().parents[1] / "data" / "qa"
FIELDS = {"id", "question", "answer", "aliases", "topic", "difficulty", "time_sensitive", "as_of", "source"}
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
    qa = load_dataset("json", data_files=str(QA / "*.jsonl"), split="train")
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
            as_of = row["as_of"]  # datasets reads the dates as timestamps
            day = as_of.date() if isinstance(as_of, datetime.datetime) else datetime.date.fromisoformat(as_of)
            assert day <= datetime.date(2026, 11, 21), row["id"]
        else:
            assert row["as_of"] is None, row["id"]

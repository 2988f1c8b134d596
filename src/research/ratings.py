"""Ratings of answers by people: one append-only JSON Lines file, shared by page and notebooks.

Records go through research.jsonl: one fsync'ed write each, so a crash or kill -9 leaves at
most one incomplete last line, which readers skip and the next append closes off.
Spreadsheet formulas are neutralised when exporting to CSV, where they would run (Gradio's
flagging had that hole: GHSA-f8xq-q7px-wg8c).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import uuid
from pathlib import Path

from research import jsonl
from research.errors import KitError
from research.models import data_dir

SCHEMA = 1
VERDICTS = ("correct", "partly correct", "wrong", "hallucinated", "refused")
FIELDS = (
    "schema",
    "id",
    "time",
    "source",
    "question_id",
    "question",
    "answer",
    "model",
    "model_sha256",
    "settings",
    "thumbs",
    "score",
    "verdict",
    "comment",
    "rater",
    "ab",
)
AB_RESULTS = ("better", "worse", "tie", "both wrong")


def default_path() -> Path:
    """$RESEARCH_RATINGS_FILE, else data/ratings/ratings.jsonl."""
    return Path(os.environ.get("RESEARCH_RATINGS_FILE") or data_dir() / "ratings" / "ratings.jsonl")


def make_record(
    question: str,
    answer: str,
    model: str,
    settings: dict | None = None,
    *,
    thumbs: str | None = None,
    score: int | None = None,
    verdict: str | None = None,
    comment: str = "",
    source: str = "chat",
    question_id: str | None = None,
    model_sha256: str | None = None,
    rater: str | None = None,
    ab: dict | None = None,
) -> dict:
    """A validated rating record; KitError when the rating itself is malformed."""
    if thumbs not in (None, "up", "down"):
        raise KitError(f"thumbs must be 'up' or 'down', not {thumbs!r}")
    if score is not None and not (isinstance(score, int) and 1 <= score <= 5):
        raise KitError(f"a score is a whole number from 1 to 5, not {score!r}")
    if verdict is not None and verdict not in VERDICTS:
        raise KitError(f"verdict must be one of {', '.join(VERDICTS)}; not {verdict!r}")
    if ab is not None and (ab.get("result") not in AB_RESULTS or not ab.get("against")):
        raise KitError(
            f"an A/B judgement needs 'against' (a model) and a result among {', '.join(AB_RESULTS)}"
        )
    if thumbs is None and score is None and verdict is None and ab is None:
        raise KitError("a rating needs thumbs, a score, a verdict or an A/B judgement")
    if not str(question).strip() or not str(answer).strip():
        raise KitError("nothing to rate: there is no question and answer yet")
    return {
        "schema": SCHEMA,
        "id": uuid.uuid4().hex,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "question_id": question_id,
        "question": question,
        "answer": answer,
        "model": model,
        "model_sha256": model_sha256,
        "settings": settings or {},
        "thumbs": thumbs,
        "score": score,
        "verdict": verdict,
        "comment": comment,
        "rater": rater,
        "ab": ab,
    }


def append(record: dict, path: str | os.PathLike | None = None) -> Path:
    """Append one record as one line, durably; returns the file's path."""
    return jsonl.append(record, path or default_path())


def read(path: str | os.PathLike | None = None) -> tuple[list[dict], int]:
    """All complete rating records and the number of damaged lines skipped."""
    records, bad = jsonl.read(path or default_path())
    good = [r for r in records if r.get("schema") == SCHEMA]
    return good, bad + len(records) - len(good)


def neutralise(value) -> str:
    """Make a cell inert in spreadsheets: `"=HYPERLINK(...)"` -> `"'=HYPERLINK(...)"`."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(records: list[dict], path: str | os.PathLike) -> Path:
    """Write records as CSV with every cell neutralised."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for r in records:
            w.writerow([neutralise("" if r.get(k) is None else r.get(k)) for k in FIELDS])
    return path

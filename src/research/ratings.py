"""Ratings of answers by people: one append-only JSON Lines file, shared by page and notebooks.

Each record is written with a single write() on a file opened O_APPEND and then fsync'ed, so a
crash or kill -9 leaves at most one incomplete last line, which readers skip and the next
append closes off. Spreadsheet formulas are neutralised when exporting to CSV, where they
would run (Gradio's flagging had that hole: GHSA-f8xq-q7px-wg8c).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import uuid
from pathlib import Path

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
)


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
) -> dict:
    """A validated rating record; KitError when the rating itself is malformed."""
    if thumbs not in (None, "up", "down"):
        raise KitError(f"thumbs must be 'up' or 'down', not {thumbs!r}")
    if score is not None and not (isinstance(score, int) and 1 <= score <= 5):
        raise KitError(f"a score is a whole number from 1 to 5, not {score!r}")
    if verdict is not None and verdict not in VERDICTS:
        raise KitError(f"verdict must be one of {', '.join(VERDICTS)}; not {verdict!r}")
    if thumbs is None and score is None and verdict is None:
        raise KitError("a rating needs thumbs, a score or a verdict")
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
    }


def append(record: dict, path: str | os.PathLike | None = None) -> Path:
    """Append one record as one line, durably; returns the file's path."""
    path = Path(path) if path else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            line = b"\n" + line  # an earlier write was cut off: start on a fresh line
        if os.write(fd, line) != len(line):
            raise KitError(f"the disk is full: the rating was not saved to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def read(path: str | os.PathLike | None = None) -> tuple[list[dict], int]:
    """All complete records and the number of damaged lines skipped."""
    path = Path(path) if path else default_path()
    if not path.exists():
        return [], 0
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(rec, dict) and rec.get("schema") == SCHEMA:
                records.append(rec)
            else:
                bad += 1
    return records, bad


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

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
import sys
import uuid
from pathlib import Path

from research import jsonl, paths
from research.errors import KitError

#: 2: records carry the provenance of the rated answer (research.engine.provenance) and A/B choices are
#: one record each; records of schema 1 are still read.
SCHEMA = 2
SCHEMAS = (1, 2)
VERDICTS = ("correct", "partly correct", "wrong", "hallucinated", "refused")
#: What the answer came from, copied from its provenance into every rating of it.
PROVENANCE = ("model", "model_sha256", "prompt_format", "system", "n_ctx", "llama_cpp", "run", "answer_id")
FIELDS = (
    "schema",
    "id",
    "time",
    "source",
    "question_id",
    "question",
    "answer",
    *PROVENANCE,
    "settings",
    "thumbs",
    "score",
    "verdict",
    "comment",
    "rater",
    "ab",
    "library",
)
#: The outcome of a blind A/B choice: the first answer shown, the second, a tie, or both wrong.
AB_RESULTS = ("A", "B", "tie", "both wrong")


def default_path() -> Path:
    """$RESEARCH_RATINGS_FILE, else ratings.jsonl in the user's data folder (research.paths).

    Ratings used to live in the checkout (data/ratings/ratings.jsonl), where `git clean -xfd` or
    a fresh clone loses them; such a file is adopted the first time the default is used.
    """
    named = os.environ.get("RESEARCH_RATINGS_FILE", "").strip()
    if named:
        return Path(named).expanduser()
    path = paths.user_data_dir() / "ratings.jsonl"
    adopt_legacy(legacy_path(), path)
    return path


def legacy_path() -> Path:
    """Where ratings were kept before they moved out of the checkout."""
    return paths.kit_data_dir() / "ratings" / "ratings.jsonl"


def adopt_legacy(legacy: Path, path: Path) -> int:
    """Move the records of a ratings file kept in the checkout into `path`; returns how many.

    Records already in `path` (same id) are not copied twice. The old file is then renamed to
    ratings.adopted.jsonl beside it (still git-ignored), so nothing is lost and nothing is
    adopted again.
    """
    if not legacy.is_file():
        return 0
    have = {r.get("id") for r in jsonl.read(path)[0]}
    records = [r for r in jsonl.read(legacy)[0] if r.get("id") not in have]
    for r in records:
        jsonl.append(r, path)
    legacy.rename(legacy.with_name("ratings.adopted.jsonl"))
    print(
        f"ratings: {len(records)} ratings moved from {legacy} to {path} (people's data lives outside "
        "the checkout now)",
        file=sys.stderr,
    )
    return len(records)


def _base(source: str, question: str, question_id: str | None, rater: str | None, comment: str) -> dict:
    if not str(question).strip():
        raise KitError("nothing to rate: there is no question and answer yet")
    return {
        "schema": SCHEMA,
        "id": uuid.uuid4().hex,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "question_id": question_id,
        "question": question,
        "comment": comment,
        "rater": rater,
    }


def make_record(
    question: str,
    answer: str,
    provenance: dict,
    *,
    thumbs: str | None = None,
    score: int | None = None,
    verdict: str | None = None,
    comment: str = "",
    source: str = "chat",
    question_id: str | None = None,
    rater: str | None = None,
) -> dict:
    """A validated rating of one answer; KitError when the rating itself is malformed.

    `provenance` is what produced the answer (research.engine.provenance.of, or an evaluation record):
    model, file hash, prompt format, system prompt, sampling, context, llama.cpp build.
    """
    if thumbs not in (None, "up", "down"):
        raise KitError(f"thumbs must be 'up' or 'down', not {thumbs!r}")
    if score is not None and not (isinstance(score, int) and 1 <= score <= 5):
        raise KitError(f"a score is a whole number from 1 to 5, not {score!r}")
    if verdict is not None and verdict not in VERDICTS:
        raise KitError(f"verdict must be one of {', '.join(VERDICTS)}; not {verdict!r}")
    if thumbs is None and score is None and verdict is None:
        raise KitError("a rating needs thumbs, a score or a verdict")
    if not str(answer or "").strip():
        raise KitError("nothing to rate: there is no question and answer yet")
    if not provenance.get("model"):
        raise KitError("a rating must say which model gave the answer")
    return _base(source, question, question_id, rater, comment) | {
        "answer": answer,
        **{k: provenance.get(k) for k in PROVENANCE},
        "settings": provenance.get("sampling") or provenance.get("settings") or {},
        "thumbs": thumbs,
        "score": score,
        "verdict": verdict,
        "ab": None,
        "library": None,  # the page's library lookup behind the answer, when there was one
    }


def make_ab_record(
    question: str,
    shown: tuple[dict, dict],
    result: str,
    *,
    comment: str = "",
    source: str = "notebook-ab",
    question_id: str | None = None,
    rater: str | None = None,
) -> dict:
    """One blind A/B choice as one record: both answers in the order shown, and the result.

    `shown` holds the two answers' records (evaluation records: answer plus provenance), A first;
    `result` is "A", "B", "tie" or "both wrong".
    """
    if result not in AB_RESULTS:
        raise KitError(f"an A/B result is one of {', '.join(AB_RESULTS)}, not {result!r}")
    sides = {}
    for name, rec in zip("AB", shown, strict=True):
        if not str(rec.get("answer") or "").strip() or not rec.get("model"):
            raise KitError("an A/B choice needs two answers and the models that gave them")
        sides[name] = {"answer": rec["answer"], "label": rec.get("label")} | {
            k: rec.get(k) for k in PROVENANCE if k != "answer_id"
        }
    return _base(source, question, question_id, rater, comment) | {
        "answer": None,
        **dict.fromkeys(PROVENANCE),
        "settings": {},
        "thumbs": None,
        "score": None,
        "verdict": None,
        "ab": {"shown": sides, "result": result},
    }


def append(record: dict, path: str | os.PathLike | None = None) -> Path:
    """Append one record as one line, durably; returns the file's path."""
    return jsonl.append(record, path or default_path())


def read(path: str | os.PathLike | None = None) -> tuple[list[dict], int]:
    """All complete rating records and the number of damaged lines skipped."""
    records, bad = jsonl.read(path or default_path())
    good = [r for r in records if r.get("schema") in SCHEMAS]
    return good, bad + len(records) - len(good)


def read_pooled(paths: list[str | os.PathLike]) -> tuple[list[dict], int]:
    """The rating records of several files (a room's participants' ratings, collected), each
    record once by its id (a file collected twice counts once), and the damaged lines skipped.

    A 75 % preference in a blind A/B clears chance (its Wilson interval above 50 %) after 16
    decided choices, a 65 % one after about 41: one pair of participants makes fewer in a
    session, a room many more.
    """
    seen, out, bad = set(), [], 0
    for path in paths:
        records, damaged = read(path)
        bad += damaged
        for r in records:
            if r.get("id") not in seen:
                seen.add(r.get("id"))
                out.append(r)
    return out, bad


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

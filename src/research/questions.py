"""Question sets: the kit's own, or any JSONL, CSV or Parquet file, or a set on the Hugging Face hub.

Every loader gives the same dicts (id, question, references, topic, difficulty), interleaved by
topic so that the first N questions (`eval --limit N`) span all of them. The kit's set and
NQ-open's `{"question": ..., "answer": [...]}` work as they are; other column names are given.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from research import paths
from research.errors import KitError

LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def default_questions() -> str:
    return str(paths.kit_data_dir() / "qa" / "*.jsonl")


@dataclass(frozen=True)
class Columns:
    """Column names of a question set; the kit's own and NQ-open's shape work as they are."""

    question: str = "question"
    answer: str = "answer"  # one string or a list of accepted strings
    aliases: str | None = "aliases"  # more accepted strings, when the set has them
    id: str | None = "id"  # else a hash of the question
    topic: str | None = "topic"  # else everything is "all"


def load_questions(path: str | None = None, columns: Columns = Columns()) -> list[dict]:
    """Questions as dicts (id, question, references, topic, difficulty) from JSONL/CSV/Parquet."""
    from datasets import load_dataset

    path = path or default_questions()
    if path.startswith("hf:"):
        return _rows_from(_from_hub(path[3:]), path, columns)
    suffix = Path(path).suffix.lower()
    if suffix not in LOADERS:
        raise KitError(f"{path}: a question file is .jsonl, .json, .csv or .parquet")
    if "*" not in path and not Path(path).is_file():
        raise KitError(f"no such file: {path}")
    if "*" not in path and Path(path).stat().st_size == 0:
        raise KitError(f"{path} is empty: no questions to ask")
    try:
        ds = load_dataset(LOADERS[suffix], data_files=path, split="train")
    except Exception as e:  # datasets raises many kinds for a malformed file
        raise KitError(
            f"cannot read {path} as {LOADERS[suffix]}: {type(e).__name__}: {str(e)[:200]}"
        ) from None
    return _rows_from(ds, path, columns)


def _from_hub(name: str):
    """A question set from the Hugging Face hub, only when asked: `hf:nq_open` or `hf:nq_open:validation`."""
    import os

    import datasets
    import huggingface_hub
    from datasets import load_dataset

    repo, _, split = name.partition(":")
    saved = {k: os.environ.pop(k, None) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    datasets.logging.set_verbosity_error()  # retries are logged line by line: one message is ours
    huggingface_hub.utils.logging.set_verbosity_error()
    try:
        return load_dataset(repo, split=split or "validation")
    except Exception as e:  # no network, unknown repo, gated set
        why = " ".join(str(e).split())[:160]
        raise KitError(
            f"could not fetch {repo!r} from the Hugging Face hub ({type(e).__name__}: {why}); "
            "download it on a connected machine and pass the file instead"
        ) from None
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def _rows_from(ds, path: str, columns: Columns) -> list[dict]:
    """Rows of a loaded dataset as the kit's question dicts, interleaved by topic."""
    missing = [c for c in (columns.question, columns.answer) if c not in ds.column_names]
    if missing:
        raise KitError(
            f"{path} has no column {missing[0]!r}; its columns are {', '.join(ds.column_names)} "
            "(name yours with --question-col / --answer-col)"
        )
    if len(ds) == 0:
        raise KitError(f"{path} holds no questions")
    rows = []
    for row in ds:
        refs = _strings(row[columns.answer])
        if columns.aliases and columns.aliases in ds.column_names:
            refs += [a for a in _strings(row[columns.aliases]) if a not in refs]
        question = str(row[columns.question] or "").strip()
        if not question or not refs:
            continue
        has_id = columns.id and columns.id in ds.column_names and row[columns.id]
        qid = str(row[columns.id]) if has_id else hashlib.sha1(question.encode()).hexdigest()[:12]
        topic = str(row[columns.topic]) if columns.topic and columns.topic in ds.column_names else "all"
        rows.append(
            {
                "id": qid,
                "question": question,
                "references": refs,
                "topic": topic,
                "difficulty": row.get("difficulty"),
            }
        )
    if not rows:
        raise KitError(f"{path}: no row has both a question and an answer")
    return interleave(rows)


def interleave(rows: list[dict]) -> list[dict]:
    """Round-robin over topics, so that the first N questions (--limit) span all of them."""
    by_topic: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_topic[r["topic"]].append(r)
    queues = list(by_topic.values())
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _strings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value).strip()] if str(value).strip() else []

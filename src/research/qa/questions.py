"""Question sets: the kit's own, or any JSONL, CSV or Parquet file, or a set on the Hugging Face hub.

Every loader gives the same dicts (id, question, references, topic, difficulty), interleaved by
topic so that the first N questions (`eval --limit N`) span all of them. The kit's set and
NQ-open's `{"question": ..., "answer": [...]}` work as they are; other column names are given.

Files are read here with the standard library (JSON Lines, a JSON array, CSV) and pyarrow
(Parquet), not through `datasets`: its loader sent a download-count request for every local
file (a lookup of s3.amazonaws.com on every `eval`) and kept a copy of each in
~/.cache/huggingface/datasets. CSV cells are kept as the text they are (pandas, which datasets
used, read "001" as 1 and an empty cell as NaN). Only `hf:NAME` reaches the network, when asked:
a child process fetches the set with the offline switches off (research.offline) and hands it
back as JSON Lines.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from research import child, paths
from research.errors import KitError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
#: Seconds a fetch from the hub may take (a few MB for the usual sets).
HUB_TIMEOUT_S = 600


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
    path = path or default_questions()
    if "," in path and not Path(path).expanduser().is_file():  # several sets: each names its own
        return _several(path, columns)
    if path.startswith("hf:"):
        return _rows_from(_from_hub(path[3:]), path, columns)
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise KitError(f"{path}: a question file is .jsonl, .json, .csv or .parquet")
    if "*" in path:
        files = sorted(glob.glob(path))
        if not files:
            raise KitError(f"no file matches {path}")
    else:
        if not Path(path).is_file():
            raise KitError(f"no such file: {path}")
        if Path(path).stat().st_size == 0:
            raise KitError(f"{path} is empty: no questions to ask")
        files = [path]
    rows: list[dict] = []
    for f in files:
        try:
            rows += read_rows(Path(f))
        except KitError:
            raise
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
            raise KitError(f"cannot read {f} as {suffix[1:]}: {type(e).__name__}: {str(e)[:200]}") from None
    return _rows_from(rows, path, columns)


def _several(spec: str, columns: Columns) -> list[dict]:
    """The questions of comma-separated sets, each tagged with its set's name (set_name); KitError
    for no set, two sets of one name, or a question id in two sets (records are keyed by id)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    names = [set_name(p) for p in parts]
    if not parts:
        raise KitError(f"{spec!r} names no question set")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise KitError(f"two question sets named {twice[0]!r} in {spec[:120]!r}: each set needs its own name")
    rows: list[dict] = []
    seen: dict[str, str] = {}
    for part, name in zip(parts, names, strict=True):
        for q in load_questions(part, columns):
            if q["id"] in seen:
                raise KitError(
                    f"question id {q['id'][:40]!r} is in both {seen[q['id']]!r} and {name!r}: records are "
                    "keyed by id, so sets asked together need ids of their own"
                )
            seen[q["id"]] = name
            rows.append(q | {"set": name})
    return interleave(rows)


def set_name(spec: str) -> str:
    """The name a question set goes by in records and calibrations: its folder's for a pattern of
    files in one folder or a file named questions (`data/longtail/*.jsonl` -> "longtail",
    `data/library/questions.jsonl` -> "library"), else the file's name without its suffix, or
    the hub set's name."""
    if spec.startswith("hf:"):
        return spec[3:]
    p = Path(spec)
    folder = p.parent.name if "*" not in p.parent.name else ""
    return (folder if ("*" in p.name or p.stem == "questions") and folder else p.stem) or spec


def read_rows(path: Path) -> list[dict]:
    """The rows of one file, as dicts, in file order.

    `.jsonl`: one JSON object a line; `.json`: JSON Lines too, or one array of objects (or
    `{"data": [...]}`); `.csv`: a header line, then rows, every cell a string; `.parquet`: through
    pyarrow. A row that is not an object is an error naming its line.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise KitError("reading Parquet needs pyarrow: pip install pyarrow") from None
        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises its own kinds for a damaged file
            raise KitError(f"cannot read {path} as parquet: {type(e).__name__}: {str(e)[:200]}") from None
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        return [dict(r) for r in csv.DictReader(text.splitlines())]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            data = None  # not one JSON document: JSON Lines, read below
        if isinstance(data, dict):
            data = data["data"] if isinstance(data.get("data"), list) else [data]
        if data is not None:
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise KitError(f"{path}: a JSON question file is a list of objects, or one object a line")
            return data
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict):
            raise KitError(f"{path}, line {n}: a question is a JSON object, not {type(row).__name__}")
        rows.append(row)
    return rows


def _from_hub(name: str) -> list[dict]:
    """A question set from the Hugging Face hub, only when asked: `hf:nq_open` or
    `hf:nq_open:validation`. Fetched by a child process (this module run with `python -m`) whose
    environment has the offline switches off; the rows come back as JSON Lines."""
    from research import offline

    repo, _, split = name.partition(":")
    env = {k: v for k, v in os.environ.items() if k not in offline.SWITCHES} | {offline.ONLINE: "1"}
    with tempfile.TemporaryDirectory(prefix="research-hub-") as tmp:
        out = Path(tmp) / "rows.jsonl"
        cmd = child.python_module("research.qa.questions", repo, split or "validation", out)
        r = child.run(cmd, f"fetching {repo!r} from the hub", timeout=HUB_TIMEOUT_S, check=False, env=env)
        if r.returncode != 0:
            why = child.last_line(r.stderr) or f"exit {r.returncode}"
            raise KitError(
                f"could not fetch {repo!r} from the Hugging Face hub ({why[:160]}); "
                "download it on a connected machine and pass the file instead"
            )
        return read_rows(out)


def _fetch(argv: list[str]) -> None:
    """The child: load a hub set with `datasets` and write its rows as JSON Lines."""
    import datasets
    import huggingface_hub

    repo, split, out = argv
    datasets.logging.set_verbosity_error()  # retries are logged line by line: one message is ours
    huggingface_hub.utils.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(repo, split=split)
    except Exception as e:  # no network, unknown repo, gated set
        raise KitError(f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
    with open(out, "w", encoding="utf-8") as f:
        for row in ds:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _rows_from(rows: list[dict], path: str, columns: Columns) -> list[dict]:
    """Rows of a question file as the kit's question dicts, interleaved by topic."""
    if not rows:
        raise KitError(f"{path} holds no questions")
    names = list(dict.fromkeys(k for r in rows for k in r))
    missing = [c for c in (columns.question, columns.answer) if c not in names]
    if missing:
        raise KitError(
            f"{path} has no column {missing[0]!r}; its columns are {', '.join(names)} "
            "(name yours with --question-col / --answer-col)"
        )
    out = []
    for row in rows:
        refs = _strings(row.get(columns.answer))
        if columns.aliases:
            refs += [a for a in _strings(row.get(columns.aliases)) if a not in refs]
        question = str(row.get(columns.question) or "").strip()
        if not question or not refs:
            continue
        has_id = columns.id and row.get(columns.id) not in (None, "")
        qid = str(row[columns.id]) if has_id else hashlib.sha1(question.encode()).hexdigest()[:12]
        topic = str(row.get(columns.topic)) if columns.topic and row.get(columns.topic) is not None else "all"
        out.append(
            {
                "id": qid,
                "question": question,
                "references": refs,
                "topic": topic,
                "difficulty": row.get("difficulty"),
            }
        )
    if not out:
        raise KitError(f"{path}: no row has both a question and an answer")
    return interleave(out)


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


if __name__ == "__main__":
    child.child_main(_fetch)

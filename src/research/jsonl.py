"""Append-only JSON Lines that survive a crash: ratings and evaluation records use these.

Each record is one write() on a file opened O_APPEND, then fsync'ed, so a kill -9 leaves at
most one incomplete last line; readers skip it and the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from research.errors import KitError


def append(record: dict, path: str | os.PathLike) -> Path:
    """Append one record as one line, durably; returns the file's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            line = b"\n" + line  # an earlier write was cut off: start on a fresh line
        if os.write(fd, line) != len(line):
            raise KitError(f"the disk is full: the record was not saved to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def read(path: str | os.PathLike) -> tuple[list[dict], int]:
    """All complete records (JSON objects) and the number of damaged lines skipped."""
    path = Path(path)
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
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
    return records, bad

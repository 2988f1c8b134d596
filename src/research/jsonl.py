"""Append-only JSON Lines that survive a crash: ratings and evaluation records use these.

Each record is one write() on a file opened O_APPEND, then fsync'ed, so a kill -9 leaves at
most one incomplete last line; readers skip it and the next append starts on a fresh line.
A full disk cuts nothing: the partial record is taken back and the error is one line.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from research import paths
from research.errors import KitError

#: errno values meaning "no room for the record", and how to say so.
NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file reached its size limit (ulimit -f, or the filesystem's largest file)",
}


def append(record: dict, path: str | os.PathLike) -> Path:
    """Append one record as one line, durably; returns the file's path.

    When there is no room (a full disk, a quota, a file size limit) the file is left as it
    was, every earlier record readable, and the error is a KitError in one line.
    """
    path = Path(path)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    try:
        paths.private_dir(path.parent)  # people's records: folders made 0700, the file 0600
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, paths.PRIVATE_FILE)
    except OSError as e:
        _raise_if_no_room(e, path)
        raise
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b"\n":
            line = b"\n" + line  # an earlier write was cut off: start on a fresh line
        written = 0
        try:
            while written < len(line):  # a short write means the disk filled up; the next says why
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as e:
            if e.errno in NO_ROOM:
                _undo(fd, size, written)
            _raise_if_no_room(e, path)
            raise
    finally:
        os.close(fd)
    return path


def _undo(fd: int, size: int, written: int) -> None:
    """Cut a partly written record off again, unless another writer appended after it."""
    try:
        if os.fstat(fd).st_size == size + written:
            os.ftruncate(fd, size)
    except OSError:
        pass  # a device or a stubborn file system: readers skip a cut line anyway


def _raise_if_no_room(e: OSError, path: Path) -> None:
    if e.errno in NO_ROOM:
        raise KitError(
            f"{NO_ROOM[e.errno]}: the record was not saved to {path}; the records before it are "
            "intact; free some space and run again"
        ) from None


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


def done(path: str | os.PathLike, key_field: str, keys, usable=None) -> dict[tuple[str, str], dict]:
    """What a resumed run skips: the records in `path` of these runs (their `key_field` in `keys`),
    the latest per (key, question id); with `usable`, only records it accepts (an error is asked
    again). Both evaluation runs resume through this: research.evaluation.run and
    research.library.evaluate.

    `done("r.jsonl", "run", {"3f2a"})` -> {("3f2a", "q1"): {...}, ...}.
    """
    keys, found = set(keys), {}
    for r in read(path)[0]:
        if r.get(key_field) in keys:
            found[(r[key_field], r.get("id"))] = r  # later lines win
    return {k: r for k, r in found.items() if usable is None or usable(r)}

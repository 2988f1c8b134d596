"""SHA-256 of model files, computed once per file version and remembered in a small cache.

Records carry the model file's hash, and hashing a 2 GB model takes seconds, so the digest is
kept in ``cache_dir()/sha256.json`` keyed by the file's resolved path, size and mtime_ns: a
file that is replaced or edited gets a new size or mtime and is hashed again. The cache is a
convenience only: a missing, damaged or unwritable cache file just means hashing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

from research.paths import cache_dir

CACHE_NAME = "sha256.json"
CACHE_VERSION = 1
MAX_ENTRIES = 256  # far more model files than one device holds; keeps the file a few KB
# A file changed again within the file system's timestamp resolution (2 s on FAT) can keep
# its size and mtime, so a hash taken that soon after the last write is not cached (git's
# "racy clean" rule). Only the first use of a just-written file pays for it.
RACY_NS = 2_000_000_000
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so a 4 GB model needs no 4 GB of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cache_file() -> Path:
    """Where the hashes are remembered: ``cache_dir()/sha256.json``."""
    return cache_dir() / CACHE_NAME


def cached_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read from the cache while its size and mtime hold.

    Raises OSError (FileNotFoundError...) when the file itself cannot be read; problems with
    the cache file never raise.
    """
    resolved = Path(path).resolve()
    key = str(resolved)
    before = resolved.stat()
    entry = _load().get(key)
    if entry and entry["size"] == before.st_size and entry["mtime_ns"] == before.st_mtime_ns:
        return entry["sha256"]
    digest = sha256_file(resolved)
    after = resolved.stat()
    unchanged = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    if unchanged and after.st_mtime_ns < time.time_ns() - RACY_NS:
        _store(key, {"size": after.st_size, "mtime_ns": after.st_mtime_ns, "sha256": digest})
    return digest


def _valid(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and type(entry.get("size")) is int
        and type(entry.get("mtime_ns")) is int
        and isinstance(entry.get("sha256"), str)
        and _HEX64.fullmatch(entry["sha256"]) is not None
    )


def _load() -> dict[str, dict]:
    """The cached entries, oldest first; anything unreadable or malformed counts as empty."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}
    return {key: entry for key, entry in entries.items() if _valid(entry)}


def _store(key: str, entry: dict) -> None:
    """Add one entry, keeping the newest MAX_ENTRIES, by writing a new file and renaming it.

    Writers never see half a file: each writes its own temporary file and os.replace swaps it
    in whole, so a crash leaves the old cache or the new one. Two processes storing at once may
    lose one of the two entries, which costs one more hash later, never a wrong one. No fsync:
    a cache emptied by a power cut is rebuilt, and a damaged one is ignored.
    """
    entries = _load()
    entries.pop(key, None)  # re-inserted last: newest
    entries[key] = entry
    entries = dict(list(entries.items())[-MAX_ENTRIES:])
    target = cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_NAME}.", suffix=".tmp", dir=target.parent)
    except OSError:
        return  # a read-only or full cache folder: the hash is still right, just not kept
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=0)
        os.replace(tmp, target)
    except OSError:
        pass
    finally:  # after a write that failed or was interrupted (Ctrl-C); a no-op after the rename
        Path(tmp).unlink(missing_ok=True)


def short_key(value, length: int = 16) -> str:
    """A short hex SHA-256 of `value` as JSON with sorted keys (anything else as its str): equal
    values, equal keys. `short_key({"b": 1, "a": 2}, 8)` == `short_key({"a": 2, "b": 1}, 8)`."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]

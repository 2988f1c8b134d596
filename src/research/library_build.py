"""Building a library: scan folders and files, read what changed, write a new version atomically.

A file is known by its path; it is read again only when its size or modification time changed
(or the kit's chunking did: research.library.FORMAT, MAX_PASSAGE_CHARS). The passages of the
others are copied from the previous version. A broken or hostile file is one line ("skipped
PATH: why") and the indexing goes on; it is tried again only once it changes. The new version is
written beside the old one and `current` is switched to it by one rename, so a crash or a kill
at any moment leaves a whole library behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from research import library_sources as src
from research.errors import KitError
from research.library import FORMAT, Library, _locked, _title, check_name, libraries_dir, tokenize


@dataclass
class Report:
    """What an update did."""

    name: str
    version: int
    files: int = 0  # documents and ZIM files in the library
    read: int = 0  # of which read now (new or changed)
    kept: int = 0  # of which unchanged, their passages kept
    passages: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    seconds: float = 0.0
    index_mb: float = 0.0

    def line(self) -> str:
        return (
            f"library {self.name!r} v{self.version}: {self.files} files ({self.read} read now, {self.kept} "
            f"unchanged), {len(self.skipped)} skipped, {self.passages} passages, {self.index_mb:.1f} MB "
            f"on disk, {self.seconds:.1f} s"
        )


def scan(roots: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files under `roots` the library reads (sorted, hidden folders passed over), and the
    roots it cannot use with why."""
    found, problems = [], []
    for root in roots:
        if root.is_file():
            if src.kind_of(root):
                found.append(root)
            else:
                problems.append(
                    (str(root), f"not a kind of document the library reads ({', '.join(src.KINDS)})")
                )
        elif root.is_dir():
            unreadable: list[OSError] = []
            # symbolic links to folders are not followed; a folder that cannot be listed is said
            for folder, dirs, files in os.walk(root, onerror=unreadable.append):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [
                    Path(folder, f) for f in sorted(files) if not f.startswith(".") and src.kind_of(Path(f))
                ]
            problems += [(e.filename or str(root), e.strerror or str(e)) for e in unreadable]
        else:
            problems.append((str(root), "no longer there; its files were dropped"))
    seen, out = set(), []
    for p in found:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out, problems


def add(name: str, new_paths=(), progress: bool = True, max_chars: int = src.MAX_PASSAGE_CHARS) -> Report:
    """Add folders and files to library `name` (made when new) and bring all of it up to date."""
    check_name(name)
    new_roots = [Path(p).expanduser().resolve() for p in new_paths]
    for p in new_roots:
        if not p.exists():
            raise KitError(f"no such file or folder: {p}")
    root = libraries_dir() / name
    with _locked(root):
        old = Library(name) if (root / "current").is_file() else None
        roots = [Path(r) for r in (old.manifest["roots"] if old else [])]
        roots += [r for r in new_roots if r not in roots]
        if not roots:
            raise KitError(f"name the folders or files to put in library {name!r}")
        return _build(name, root, roots, old, progress, max_chars)


def update(name: str, progress: bool = True) -> Report:
    """Read again what changed in library `name`'s folders and files."""
    return add(name, (), progress)


def _say(text: str, progress: bool) -> None:
    if progress:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _build(
    name: str, root: Path, roots: list[Path], old: Library | None, progress: bool, max_chars: int
) -> Report:
    from tqdm import tqdm

    t0 = time.perf_counter()
    files, problems = scan(roots)
    roots = [r for r in roots if r.exists()]
    same_format = (
        old is not None and old.manifest.get("format") == FORMAT and old.manifest["max_chars"] == max_chars
    )
    before = {f["path"]: (i, f) for i, f in enumerate(old.files)} if same_format else {}
    version = (old.version + 1) if old else 1
    report = Report(name, version, skipped=list(problems))
    for path, why in problems:
        _say(f"skipped {path}: {why}", progress)
    tmp = root / f"v{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries, texts, offsets = [], [], [0]
    with open(tmp / "passages.jsonl", "wb") as store:

        def put(rec: dict) -> None:
            line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
            store.write(line)
            offsets.append(offsets[-1] + len(line))
            texts.append(f"{rec['t']}\n{rec['x']}")

        for path in tqdm(files, desc=f"reading {name}", unit="file", disable=not progress, file=sys.stderr):
            try:
                st = path.stat()
            except OSError as e:
                report.skipped.append((str(path), e.strerror or str(e)))
                continue
            entry = {
                "path": str(path),
                "kind": src.kind_of(path),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
            fno, first = len(entries), len(offsets) - 1
            prev = before.get(str(path))
            if prev and (prev[1]["size"], prev[1]["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                i, info = prev
                for n in range(info["first"], info["first"] + info["count"]):
                    put({**old.stored(n), "f": fno})
                entry |= {k: info[k] for k in info if k not in entry and k not in ("first", "count")}
                report.kept += 1
            else:
                report.read += 1
                try:
                    entry |= _read_into(path, entry, fno, put, max_chars, progress)
                except src.SourceError as e:
                    entry["error"] = str(e)
                    # The passages written before the error stay out of the index.
                    del offsets[first + 1 :], texts[first:]
                    store.seek(offsets[-1])
                    store.truncate()
            if entry.get("error"):
                report.skipped.append((str(path), entry["error"]))
                _say(f"skipped {path}: {entry['error']}", progress)
            entries.append(entry | {"first": first, "count": len(offsets) - 1 - first})
    if not texts and not any(e.get("fulltext") for e in entries):
        shutil.rmtree(tmp, ignore_errors=True)
        why = "; ".join(f"{p}: {w}" for p, w in report.skipped[:3]) or "no document of a kind it reads"
        raise KitError(
            f"library {name!r} would hold no text to search ({why}); "
            + ("the library is unchanged" if old else "nothing was made")
        )
    if texts:
        import bm25s
        import numpy as np

        retriever = bm25s.BM25()
        retriever.index(tokenize(texts, progress), show_progress=progress)
        retriever.save(tmp / "bm25", show_progress=False)
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "created": old.manifest["created"] if old else now,
        "updated": now,
        "roots": [str(r) for r in roots],
        "max_chars": max_chars,
        "passages": len(texts),
        "files": entries,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    final = root / f"v{version}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    current = root / "current.tmp"
    current.write_text(final.name)
    with open(current) as f:
        os.fsync(f.fileno())
    current.replace(root / "current")  # the switch: one rename
    for stale in root.glob("v*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    report.files = sum(1 for e in entries if not e.get("error"))
    report.passages = len(texts)
    report.seconds = time.perf_counter() - t0
    report.index_mb = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / 2**20
    return report


def _read_into(path: Path, entry: dict, fno: int, put, max_chars: int, progress: bool) -> dict:
    """Read one file's passages through `put`; returns what the manifest keeps about it."""
    if entry["kind"] != "zim":
        doc = src.read(path)
        for pos, (sec, text) in enumerate(src.passages(doc, max_chars), 1):
            put({"f": fno, "t": _title(doc.title, sec), "p": pos, "x": text})
        return {"title": doc.title}
    src.probe_zim(path)
    archive = src.open_zim(path)
    info = {"title": src.zim_title(archive) or path.stem, "uuid": str(archive.uuid)}
    if archive.has_fulltext_index:  # searched through its own index: nothing to read now
        return info | {"fulltext": True, "articles": archive.article_count}
    from tqdm import tqdm

    unreadable = 0
    for index in tqdm(
        range(archive.entry_count), desc=path.name, unit="entry", disable=not progress, leave=False
    ):
        try:
            doc = src.zim_article(archive, index)
        except src.SourceError:
            unreadable += 1
            continue
        if doc is None:
            continue
        entry_path = archive._get_entry_by_id(index).path
        for pos, (sec, text) in enumerate(src.passages(doc, max_chars), 1):
            put({"f": fno, "t": _title(doc.title, sec), "p": pos, "e": entry_path, "x": text})
    if unreadable:
        _say(f"{path}: {unreadable} entries could not be read and were passed over", progress)
    return info | {"fulltext": False, "articles": archive.article_count}

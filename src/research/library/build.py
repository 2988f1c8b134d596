"""Building a library: scan folders and files, read what changed, write a new version atomically.

Only regular files under the chosen folders are read (research.files: links leading
out, pipes, devices and sockets are refused). A file is known by its path; it is read again only
when its size or modification time changed (or the kit's chunking did: research.library.store.FORMAT,
MAX_PASSAGE_CHARS). The passages of the others are copied from the previous version. A broken or
hostile file is one line ("skipped PATH: why") and the indexing goes on; it is tried again only
once it changes. The new version is written beside the old one, made private (folders 0700,
files 0600: it holds the text of the user's documents), and `current` is switched to it by one
rename, so a crash or a kill at any moment leaves a whole library behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from research import files, paths
from research.errors import KitError
from research.library import sources as src
from research.library import zim
from research.library.ranking import title_of, tokenize
from research.library.store import FORMAT, Library, _locked, check_name, libraries_dir
from research.units import MB


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
    """The files under `roots` the library reads (in folder order, hidden ones passed over), and
    the files and roots it refuses, with why (research.files.scan)."""
    return files.scan(roots, src.kind_of)


def add(name: str, new_paths=(), progress: bool = True, max_chars: int = src.MAX_PASSAGE_CHARS) -> Report:
    """Add folders and files to library `name` (made when new) and bring all of it up to date."""
    check_name(name)
    new_roots = [Path(p).expanduser().resolve() for p in new_paths]
    for p in new_roots:
        if not p.exists():
            raise KitError(f"no such file or folder: {files.shown(p)}")
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
    text = files.shown(text)  # a file's name may hold bytes that are not UTF-8, or escape sequences
    if progress:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _build(
    name: str, root: Path, roots: list[Path], old: Library | None, progress: bool, max_chars: int
) -> Report:
    t0 = time.perf_counter()
    found, problems = scan(roots)
    roots = [r for r in roots if r.exists()]
    same_format = (
        old is not None and old.manifest.get("format") == FORMAT and old.manifest["max_chars"] == max_chars
    )
    before = {str(old.file_path(f)): (i, f) for i, f in enumerate(old.files)} if same_format else {}
    version = (old.version + 1) if old else 1
    report = Report(name, version, skipped=list(problems))
    for path, why in problems:
        _say(f"skipped {path}: {why}", progress)
    tmp = root / f"v{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    paths.private_dir(tmp)
    entries, texts, offsets = _passages(name, found, roots, tmp, before, old, report, max_chars, progress)
    tokens = tokenize(texts, progress) if texts else None
    if tokens is not None and not tokens.vocab:  # one-letter words and signs only: nothing to search
        texts, offsets = [], [0]
        (tmp / "passages.jsonl").write_bytes(b"")
        for e in entries:
            e["first"] = e["count"] = 0
    if not texts and not any(e.get("fulltext") for e in entries):
        shutil.rmtree(tmp, ignore_errors=True)
        why = "; ".join(f"{files.shown(p)}: {w}" for p, w in report.skipped[:3])
        why = why or ("its files hold no word to search for" if entries else "no document of a kind it reads")
        raise KitError(
            f"library {name!r} would hold no text to search ({why}); "
            + ("the library is unchanged" if old else "nothing was made")
        )
    if texts:
        import bm25s
        import numpy as np

        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=progress)
        retriever.save(tmp / "bm25", show_progress=False)
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    final = _commit(name, root, tmp, version, old, roots, max_chars, texts, entries)
    report.files = sum(1 for e in entries if not e.get("error"))
    report.passages = len(texts)
    report.seconds = time.perf_counter() - t0
    report.index_mb = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / MB
    return report


def _passages(
    name, found, roots, tmp: Path, before: dict, old, report: Report, max_chars: int, progress: bool
):
    """Every file's passages into tmp/passages.jsonl: kept from the old version when the file has
    not changed (size and time), read again otherwise; (manifest entries, searched texts, offsets)."""
    from tqdm import tqdm

    entries, texts, offsets = [], [], [0]
    digests: dict[str, str] = {}  # a document's content hash -> the file read for it
    with open(tmp / "passages.jsonl", "wb") as store:

        def put(rec: dict, title: str) -> None:
            """Store one passage; `title` (the document's and the section's) is searched with it."""
            line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8", "replace")
            store.write(line)
            offsets.append(offsets[-1] + len(line))
            texts.append(f"{title}\n{rec['x']}")

        for path in tqdm(found, desc=f"reading {name}", unit="file", disable=not progress, file=sys.stderr):
            try:
                st = path.stat()
            except OSError as e:
                report.skipped.append((str(path), e.strerror or str(e)))
                _say(f"skipped {path}: {e.strerror or e}", progress)
                continue
            i_root, rel = files.relative(path, roots)
            entry = {
                "root": i_root,
                "path": rel,
                "kind": src.kind_of(path),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
            fno, first = len(entries), len(offsets) - 1
            prev = before.get(str(path))
            # Unchanged: its passages (or its error) kept; a copy is looked at again (its original
            # may be gone).
            unchanged = prev and (prev[1]["size"], prev[1]["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
            if unchanged and not prev[1].get("copy"):
                _, info = prev
                for n in range(info["first"], info["first"] + info["count"]):
                    rec = old.stored(n)
                    put({**rec, "f": fno}, title_of(rec.get("d") or info.get("title", ""), rec.get("s", "")))
                entry |= {k: info[k] for k in info if k not in entry and k not in ("first", "count")}
                if entry.get("sha256"):
                    digests.setdefault(entry["sha256"], str(path))
                report.kept += 1
            else:
                report.read += 1
                digest = _digest(path, roots, st.st_size, entry["kind"])
                try:
                    if digest and digest in digests:
                        entry["copy"] = True
                        raise src.SourceError(f"the same text as {files.shown(digests[digest])}: read once")
                    if digest:
                        digests[digest] = str(path)
                        entry["sha256"] = digest
                    entry |= _read_into(path, roots, fno, put, max_chars, progress)
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
    return entries, texts, offsets


def _digest(path: Path, roots: list[Path], size: int, kind: str) -> str:
    """A document's SHA-256, so that copies of one file are read once (a folder of copies of a
    slow document would otherwise cost its reading time once per copy); "" for a ZIM (gigabytes,
    and read through its own index) or a file that cannot be opened (its reader says why)."""
    import hashlib

    if kind == "zim" or size > src.MAX_PDF_MB * MB:
        return ""
    try:
        with files.opened(path, roots) as fd, open(fd, "rb", closefd=False) as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, files.FileRefused):
        return ""


def _commit(name, root: Path, tmp: Path, version: int, old, roots, max_chars: int, texts, entries) -> Path:
    """The manifest written, the folder made private, and the new version switched in with one
    rename; the older versions removed. Returns the new version's folder."""
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
    # ASCII: a file name that is not UTF-8 is kept as its escapes, and read back the same
    (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=True, indent=1))
    paths.private_tree(tmp)  # bm25s and NumPy write with the process's umask
    final = root / f"v{version}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    paths.write_private(root / "current", final.name)  # the switch: one rename
    for stale in root.glob("v*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _read_into(path: Path, roots: list[Path], fno: int, put, max_chars: int, progress: bool) -> dict:
    """Read one file's passages through `put`; returns what the manifest keeps about it."""
    if src.kind_of(path) != "zim":
        doc = src.read(path, roots)
        for pos, (sec, text) in enumerate(src.passages(doc, max_chars), 1):
            put({"f": fno, "p": pos, "s": sec, "x": text}, title_of(doc.title, sec))
        return {"title": doc.title}
    probed = zim.probe(path, roots)
    info = {
        "title": src.cap_title(str(probed.get("title") or "")) or src.cap_title(files.clean(path.stem)),
        "uuid": str(probed.get("uuid", "")),
        "fulltext": bool(probed.get("fulltext")),
        "articles": int(probed.get("articles") or 0),
    }
    if info["fulltext"]:  # searched through its own index: nothing to read now
        return info
    from tqdm import tqdm

    unreadable = 0
    with tqdm(desc=path.name, unit="entry", disable=not progress, leave=False, file=sys.stderr) as bar:
        for msg in zim.articles(path, roots, max_chars):
            if "entries" in msg:
                bar.total = int(msg["entries"])
            elif "unreadable" in msg:
                unreadable = int(msg["unreadable"])
            else:  # the child's lines are bounded there, and again here
                title, entry_path = src.cap_title(str(msg["d"])), str(msg["e"])[: zim.MAX_ENTRY_PATH_CHARS]
                for pos, (sec, text) in enumerate(msg["p"], 1):
                    sec, text = src.cap_title(str(sec)), str(text)[:max_chars]
                    put(
                        {"f": fno, "p": pos, "d": title, "s": sec, "e": entry_path, "x": text},
                        title_of(title, sec),
                    )
                bar.update(int(msg["i"]) + 1 - bar.n)
    if unreadable:
        _say(f"{path}: {unreadable} entries could not be read and were passed over", progress)
    return info

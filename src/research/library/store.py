"""A library the user controls, on the device: their documents and Kiwix ZIM files, searchable.

`add(name, paths)` indexes folders and files (research.library.sources reads them) into
`user_data_dir()/libraries/<name>/`, never inside the checkout. Indexing is incremental: a file
whose path, size and modification time are unchanged keeps its passages; only new and changed
files are read again (reading, especially PDF, is the costly part), then the BM25 index
(bm25s) is rebuilt over all passages, which takes seconds even for 100,000 of them. Each
update writes a new version folder and then switches `current` to it in one rename, so a
crash or a kill leaves the previous version whole.

A ZIM file with its own full-text index (Kiwix's Wikipedia files have one) is not indexed
again: it is searched through libzim's Searcher in a worker child (research.library.zim), which
cuts the articles it finds into passages once and ranks them for the question. A ZIM without
one has its articles indexed like files. Results of several sources are merged by reciprocal
rank, since BM25 scores of different indexes do not compare. A search takes at most
SEARCH_BUDGET_S: a ZIM that would take longer is left out of that question's answer, in one line.

What a search returns is shown to people (terminal, page, records): its titles, names and texts
are cleaned of control characters (research.files.clean), and a document is named by
its path from the folder the user chose, never by the folders above it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from research import paths
from research.errors import KitError
from research.files import clean, shown
from research.library import zim
from research.library.ranking import query_terms, title_of
from research.units import MB

#: The index layout and chunking; a library of another format is read again from its files.
#: 2: paths from the chosen folders, the title once per file, short sections sharing passages.
FORMAT = 2
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: What a library's `current` file may name: one of its own version folders, nothing else.
VERSION = re.compile(r"v\d{1,9}")
#: A passage id: "<version>-<n>" (a stored passage) or "<version>-z<file>-<entry>-<position>" (a
#: passage of an article found through a ZIM's own index). Digits only: safe in a URL and a path.
PASSAGE_ID = re.compile(r"(\d{1,9})-(?:(\d{1,10})|z(\d{1,6})-(\d{1,12})-(\d{1,6}))")
#: Reciprocal-rank fusion constant (Cormack et al. 2009): ranks of different sources merge.
RRF_K = 60
#: Seconds one search may take. The stored index answers in milliseconds; a ZIM's own search
#: takes tens to hundreds of milliseconds on a phone. Past this the question is answered from
#: what was found so far: a retrieval never holds an answer longer.
SEARCH_BUDGET_S = 5.0


def libraries_dir() -> Path:
    return paths.user_data_dir() / "libraries"


def check_name(name: str) -> str:
    """`name` when it can name a library folder (letters, digits, `._-`), else KitError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise KitError(
            f"a library name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"not {name!r}"
        )
    return name


def default_name(first: Path) -> str:
    """`default_name(Path("/docs/My Reports"))` -> "My_Reports"."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", first.resolve().stem or "library").strip("._-")[:64]
    return name or "library"


@dataclass
class Hit:
    """A passage found for a question, and where it comes from."""

    id: str  # for passage(): "3-17" or "3-z0-1234-2"
    score: float  # BM25 within its own source (stored index, or one ZIM's articles)
    title: str  # the document's title, and the section when it has one
    source: str  # the file's path, or "file.zim:entry/path"
    position: int  # the passage's number within its file or ZIM article, from 1
    text: str
    kind: str  # text, markdown, html, pdf, zim

    def as_dict(self) -> dict:
        return asdict(self)


def current_version(root: Path, name: str) -> str:
    """The version folder a library's `current` names ("v3"); KitError when there is no library,
    or when `current` names anything but one of its own version folders."""
    try:
        with open(root / "current", "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except OSError:
        raise KitError(
            f"no library named {name!r}; make it with: python -m research library add PATH --name {name}"
        ) from None
    folder = root / text
    if not VERSION.fullmatch(text) or folder.is_symlink() or not folder.is_dir():
        raise KitError(
            f"library {name!r} is damaged (its 'current' names {shown(text)[:20]!r}, not one of its "
            f"versions); remove it with: python -m research library remove {name}, and add its files again"
        )
    return text


class Library:
    """One library's current version: its manifest, passages and index, opened for searching."""

    def __init__(self, name: str):
        self.name = check_name(name)
        self.root = libraries_dir() / name
        self.dir = self.root / current_version(self.root, name)
        try:
            self.manifest = json.loads((self.dir / "manifest.json").read_text())
            self.version: int = int(self.manifest["version"])
            self.files: list[dict] = list(self.manifest["files"])
        except (OSError, ValueError, KeyError, TypeError):
            raise KitError(f"library {name!r} is damaged; add its files again to rebuild it") from None
        self._retriever = self._offsets = self._store = None
        self._lock = threading.Lock()  # the page searches from several threads
        self._warned: set[tuple[int, str]] = set()

    # -- the files --

    def file_path(self, f: dict) -> Path:
        """Where the file of manifest entry `f` is on this device."""
        if "root" in f:
            return Path(self.manifest["roots"][f["root"]]).parent / f["path"]
        return Path(f["path"])  # a library of format 1 kept absolute paths

    def file_name(self, f: dict) -> str:
        """How the file of entry `f` is named to people: its path from the chosen folder's parent
        ("reports/2024/memo.pdf"), cleaned for a terminal or a page."""
        return shown(f["path"] if "root" in f else Path(f["path"]).name)

    # -- the stored passages --

    def _open_store(self):
        with self._lock:
            if self._store is None and self.manifest["passages"]:
                import bm25s
                import numpy as np

                self._retriever = bm25s.BM25.load(self.dir / "bm25", mmap=True, show_progress=False)
                self._offsets = np.load(self.dir / "offsets.npy", mmap_mode="r")
                self._store = open(self.dir / "passages.jsonl", "rb")  # noqa: SIM115 - kept open

    def stored(self, n: int) -> dict:
        """Stored passage `n`: {"f": file number, "s": section, "p": position, "x": text, ...}."""
        self._open_store()
        if self._store is None or not 0 <= n < len(self._offsets) - 1:
            raise KitError(f"library {self.name!r} has no passage {n}")
        start, end = int(self._offsets[n]), int(self._offsets[n + 1])
        with self._lock:
            self._store.seek(start)
            return json.loads(self._store.read(end - start))

    def _hit(self, pid: str, score: float, rec: dict) -> Hit:
        f = self.files[rec["f"]]
        name = self.file_name(f)
        source = f"{name}:{rec['e']}" if "e" in rec else name
        title = rec["t"] if "t" in rec else title_of(rec.get("d") or f.get("title", ""), rec.get("s", ""))
        return Hit(pid, round(score, 4), shown(title), shown(source), rec["p"], clean(rec["x"]), f["kind"])

    def _search_stored(self, query: str, k: int) -> list[Hit]:
        self._open_store()
        if self._retriever is None:
            return []
        vocab = self._retriever.vocab_dict
        terms = [t for t in query_terms(query) if t in vocab]
        if not terms:
            return []
        n = self.manifest["passages"]
        docs, scores = self._retriever.retrieve([terms], k=min(k, n), show_progress=False, n_threads=0)
        return [
            self._hit(f"{self.version}-{int(d)}", float(s), self.stored(int(d)))
            for d, s in zip(docs[0], scores[0], strict=True)
            if s > 0
        ]

    # -- ZIM files searched through their own full-text index, in a worker child --

    def _zims(self) -> list[int]:
        return [
            f
            for f, info in enumerate(self.files)
            if info["kind"] == "zim" and info.get("fulltext") and not info.get("error")
        ]

    def _zim_request(self, f: int, **request) -> dict:
        return {
            "path": str(self.file_path(self.files[f])),
            "roots": self.manifest["roots"],
            "max_chars": self.manifest["max_chars"],
            **request,
        }

    def _search_zim(self, f: int, query: str, k: int, budget: float) -> list[Hit]:
        terms = query_terms(query)
        if not terms:
            return []
        request = self._zim_request(f, op="search", query=query, terms=terms, k=k, budget=budget)
        reply = zim.SEARCHER.call(request, budget)
        name = self.file_name(self.files[f])
        out = []
        for index, path, pos, title, text, score in reply["hits"]:
            pid = f"{self.version}-z{f}-{int(index)}-{int(pos)}"
            source = shown(f"{name}:{path}")
            out.append(
                Hit(pid, round(float(score), 4), shown(str(title)), source, int(pos), clean(str(text)), "zim")
            )
        return out

    def _warn(self, f: int, message: str) -> None:
        """One line on stderr for a source left out of an answer, once per file and reason."""
        if (f, message) not in self._warned:
            self._warned.add((f, message))
            print(
                f"warning: {self.file_name(self.files[f])}: {message}; answered from the library's "
                "other passages",
                file=sys.stderr,
            )

    # -- searching and reading --

    def search(self, query: str, k: int = 5, budget: float | None = None) -> list[Hit]:
        """The `k` best passages for `query`, best first (an empty list when nothing matches),
        within `budget` seconds (SEARCH_BUDGET_S by default)."""
        budget = SEARCH_BUDGET_S if budget is None else budget
        start = time.monotonic()
        lists = [self._search_stored(query, k)]
        for f in self._zims():
            left = budget - (time.monotonic() - start)
            try:
                if left <= 0:
                    raise KitError(f"the search's {budget:g} s were spent before this file's turn")
                lists.append(self._search_zim(f, query, k, left))
            except KitError as e:  # a ZIM moved away, past the budget, or crashing its reader
                self._warn(f, str(e))
        lists = [x for x in lists if x]
        if len(lists) <= 1:
            return lists[0][:k] if lists else []
        fused: dict[str, tuple[float, Hit]] = {}
        for hits in lists:
            for rank, hit in enumerate(hits):
                prev = fused.get(hit.id, (0.0, hit))[0]
                fused[hit.id] = (prev + 1 / (RRF_K + rank + 1), hit)
        return [hit for _, hit in sorted(fused.values(), key=lambda x: -x[0])][:k]

    def passage(self, pid: str) -> Hit:
        """A passage by its id (from a search of this version); KitError when it is not there."""
        m = PASSAGE_ID.fullmatch(pid or "")
        if not m:
            raise KitError(f"{pid!r} is not a passage id")
        if int(m.group(1)) > self.version:  # from no version this library has had
            raise KitError(f"library {self.name!r} has no passage {pid} (it is at version {self.version})")
        if int(m.group(1)) != self.version:
            raise KitError(f"library {self.name!r} was updated since this passage was found; ask again")
        if m.group(2) is not None:
            return self._hit(pid, 0.0, self.stored(int(m.group(2))))
        f, entry, pos = int(m.group(3)), int(m.group(4)), int(m.group(5))
        if f not in self._zims():
            raise KitError(f"library {self.name!r} has no passage {pid}")
        try:
            request = self._zim_request(f, op="passages", entry=entry, budget=SEARCH_BUDGET_S)
            reply = zim.SEARCHER.call(request, SEARCH_BUDGET_S)
            title, text = reply["passages"][pos - 1]
        except (IndexError, ValueError, zim.src.SourceError):
            raise KitError(f"library {self.name!r} has no passage {pid}") from None
        source = shown(f"{self.file_name(self.files[f])}:{reply['path']}")
        return Hit(pid, 0.0, shown(str(title)), source, pos, clean(str(text)), "zim")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())

    def summary(self) -> dict:
        m = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "files": sum(1 for f in self.files if f["kind"] != "zim" and not f.get("error")),
            "zims": sum(1 for f in self.files if f["kind"] == "zim" and not f.get("error")),
            "skipped": sum(1 for f in self.files if f.get("error")),
            "passages": m["passages"],
            "index_mb": self.size_bytes() / MB,
            "updated": m["updated"],
            "roots": m["roots"],
        }


_OPEN: dict[str, Library] = {}
_OPEN_LOCK = threading.Lock()


def open_library(name: str) -> Library:
    """The current version of library `name`, opened once per process and version."""
    check_name(name)
    with _OPEN_LOCK:
        lib = _OPEN.get(name)
        try:
            current = (libraries_dir() / name / "current").read_text().strip()
        except OSError:
            current = None
        if lib is None or lib.dir.name != current:
            lib = _OPEN[name] = Library(name)
            if lib._zims():
                zim.SEARCHER.start()  # its start is then behind us when the first question comes
        return lib


def names() -> list[str]:
    root = libraries_dir()
    return sorted(p.name for p in root.glob("*") if (p / "current").is_file()) if root.is_dir() else []


def remove(name: str) -> Path:
    """Delete library `name`'s index (never the documents it was made from).

    Only the library's own folder goes: what `current` names is checked to be one of its version
    folders first (a `current` naming `../../` or a link deletes nothing outside), and the folder
    tree is deleted without following links.
    """
    root = libraries_dir() / check_name(name)
    if root.is_symlink() or not (root / "current").is_file():
        raise KitError(f"no library named {name!r} (see: python -m research library list)")
    with _locked(root):
        try:
            shutil.rmtree(root / current_version(root, name))
        except KitError:
            pass  # a damaged `current`: nothing outside is named; the folder itself goes below
        except OSError as e:
            raise KitError(f"could not delete library {name!r}: {e.strerror or e}") from None
        (root / "current").unlink()
    shutil.rmtree(root, ignore_errors=True)  # rmtree never follows a link out of the folder
    with _OPEN_LOCK:
        _OPEN.pop(name, None)
    return root


@contextlib.contextmanager
def _locked(root: Path):
    paths.private_dir(root)
    fd = os.open(root / ".lock", os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), paths.PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KitError(
                f"library {root.name!r} is being updated by another process; wait for it"
            ) from None
        yield

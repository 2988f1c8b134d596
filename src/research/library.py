"""A library the user controls, on the device: their documents and Kiwix ZIM files, searchable.

`add(name, paths)` indexes folders and files (research.library_sources reads them) into
`user_data_dir()/libraries/<name>/`, never inside the checkout. Indexing is incremental: a file
whose path, size and modification time are unchanged keeps its passages; only new and changed
files are read again (reading, especially PDF, is the costly part), then the BM25 index
(bm25s) is rebuilt over all passages, which takes seconds even for 100,000 of them. Each
update writes a new version folder and then switches `current` to it in one rename, so a
crash or a kill leaves the previous version whole.

A ZIM file with its own full-text index (Kiwix's Wikipedia files have one) is not indexed
again: it is searched through libzim's Searcher, and the articles it finds are cut into
passages and ranked for the question. A ZIM without one has its articles indexed like files.
Results of several sources are merged by reciprocal rank, since BM25 scores of different
indexes do not compare.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from research import library_sources as src
from research import paths
from research.errors import KitError

#: The index layout and chunking; a library of another format is read again from its files.
FORMAT = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A passage id: "<version>-<n>" (a stored passage) or "<version>-z<file>-<entry>-<position>" (a
#: passage of an article found through a ZIM's own index). Digits only: safe in a URL and a path.
PASSAGE_ID = re.compile(r"^(\d{1,9})-(?:(\d{1,10})|z(\d{1,6})-(\d{1,12})-(\d{1,6}))$")
#: Articles of a ZIM's own full-text search cut into passages per question: enough to find the
#: passage that answers (the search ranks articles, not passages), few enough to stay fast.
ZIM_ARTICLES = 6
#: Reciprocal-rank fusion constant (Cormack et al. 2009): ranks of different sources merge.
RRF_K = 60


def libraries_dir() -> Path:
    return paths.user_data_dir() / "libraries"


def check_name(name: str) -> str:
    """`name` when it can name a library folder (letters, digits, `._-`), else KitError."""
    if not isinstance(name, str) or not NAME.match(name):
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


def tokenize(texts: list[str], progress: bool = False):
    """bm25s's tokens (lower case, English stop words dropped) as ids and a vocabulary."""
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=progress)


def query_terms(query: str) -> list[str]:
    """`query_terms("What is the capital of Zorbia?")` -> ["capital", "zorbia"]."""
    import bm25s

    return bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]


def bm25_rank(texts: list[str], query: str, k: int) -> list[tuple[int, float]]:
    """(index, score) of the best `k` of a few `texts` for `query`, by BM25 (scores above 0)."""
    import bm25s

    if not texts:
        return []
    retriever = bm25s.BM25()
    retriever.index(tokenize(texts), show_progress=False)
    terms = [t for t in query_terms(query) if t in retriever.vocab_dict]
    if not terms:
        return []
    docs, scores = retriever.retrieve([terms], k=min(k, len(texts)), show_progress=False, n_threads=0)
    return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


class Library:
    """One library's current version: its manifest, passages and index, opened for searching."""

    def __init__(self, name: str):
        self.name = check_name(name)
        self.root = libraries_dir() / name
        try:
            version = (self.root / "current").read_text().strip()
        except OSError:
            raise KitError(
                f"no library named {name!r}; make it with: python -m research library add PATH --name {name}"
            ) from None
        self.dir = self.root / version
        try:
            self.manifest = json.loads((self.dir / "manifest.json").read_text())
        except (OSError, ValueError):
            raise KitError(f"library {name!r} is damaged; add its files again to rebuild it") from None
        self.version: int = self.manifest["version"]
        self.files: list[dict] = self.manifest["files"]
        self._retriever = self._offsets = self._store = None
        self._zims: dict[int, object] = {}
        self._lock = threading.Lock()  # the page searches from several threads

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
        """Stored passage `n`: {"f": file number, "t": title, "p": position, "x": text, ...}."""
        self._open_store()
        if self._store is None or not 0 <= n < len(self._offsets) - 1:
            raise KitError(f"library {self.name!r} has no passage {n}")
        start, end = int(self._offsets[n]), int(self._offsets[n + 1])
        with self._lock:
            self._store.seek(start)
            return json.loads(self._store.read(end - start))

    def _hit(self, pid: str, score: float, rec: dict) -> Hit:
        f = self.files[rec["f"]]
        source = f"{f['path']}:{rec['e']}" if "e" in rec else f["path"]
        return Hit(pid, round(score, 4), rec["t"], source, rec["p"], rec["x"], f["kind"])

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

    # -- ZIM files searched through their own full-text index --

    def _zim(self, f: int):
        with self._lock:
            if f not in self._zims:
                self._zims[f] = src.open_zim(Path(self.files[f]["path"]))
            return self._zims[f]

    def _zim_passages(self, f: int, entry: int) -> list[tuple[str, str]]:
        doc = src.zim_article(self._zim(f), entry)
        if doc is None:
            return []
        return [(_title(doc.title, sec), text) for sec, text in src.passages(doc, self.manifest["max_chars"])]

    def _search_zim(self, f: int, query: str, k: int) -> list[Hit]:
        from libzim.search import Query, Searcher

        archive = self._zim(f)
        terms = query_terms(query)
        if not terms:
            return []
        searcher, found = Searcher(archive), {}
        # libzim's query parser joins words with AND and finds nothing for words it never
        # indexed: all the question's words first, then each word alone fills the rest.
        for q in [" ".join(terms), *(terms if len(terms) > 1 else [])]:
            for path in searcher.search(Query().set_query(q)).getResults(0, ZIM_ARTICLES):
                found.setdefault(path, len(found))
            if len(found) >= ZIM_ARTICLES:
                break
        candidates = []
        for path in list(found)[:ZIM_ARTICLES]:
            try:
                entry = archive.get_entry_by_path(path)
                for pos, (title, text) in enumerate(self._zim_passages(f, entry._index), 1):
                    candidates.append((entry._index, entry.path, pos, title, text))
            except Exception:  # one unreadable article costs that article only
                continue
        ranked = bm25_rank([f"{c[3]}\n{c[4]}" for c in candidates], query, k)
        out = []
        for i, score in ranked:
            index, path, pos, title, text = candidates[i]
            pid = f"{self.version}-z{f}-{index}-{pos}"
            out.append(Hit(pid, round(score, 4), title, f"{self.files[f]['path']}:{path}", pos, text, "zim"))
        return out

    # -- searching and reading --

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` best passages for `query`, best first (an empty list when nothing matches)."""
        lists = [self._search_stored(query, k)]
        for f, info in enumerate(self.files):
            if info["kind"] == "zim" and info.get("fulltext") and not info.get("error"):
                try:
                    lists.append(self._search_zim(f, query, k))
                except KitError as e:  # a ZIM moved away since it was added
                    print(f"warning: {info['path']}: {e}", file=sys.stderr)
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
        m = PASSAGE_ID.match(pid or "")
        if not m:
            raise KitError(f"{pid!r} is not a passage id")
        if int(m.group(1)) > self.version:  # from no version this library has had
            raise KitError(f"library {self.name!r} has no passage {pid} (it is at version {self.version})")
        if int(m.group(1)) != self.version:
            raise KitError(f"library {self.name!r} was updated since this passage was found; ask again")
        if m.group(2) is not None:
            return self._hit(pid, 0.0, self.stored(int(m.group(2))))
        f, entry, pos = int(m.group(3)), int(m.group(4)), int(m.group(5))
        if f >= len(self.files) or self.files[f]["kind"] != "zim":
            raise KitError(f"library {self.name!r} has no passage {pid}")
        try:
            found = self._zim_passages(f, entry)
            title, text = found[pos - 1]
            path = self._zim(f)._get_entry_by_id(entry).path
        except (IndexError, src.SourceError):
            raise KitError(f"library {self.name!r} has no passage {pid}") from None
        return Hit(pid, 0.0, title, f"{self.files[f]['path']}:{path}", pos, text, "zim")

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
            "index_mb": self.size_bytes() / 2**20,
            "updated": m["updated"],
            "roots": m["roots"],
        }


def _title(doc_title: str, section: str) -> str:
    """`_title("Report", "Costs")` -> "Report › Costs"; the section alone is not repeated."""
    return f"{doc_title} › {section}" if section and section != doc_title else doc_title


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
        return lib


def names() -> list[str]:
    root = libraries_dir()
    return sorted(p.name for p in root.glob("*") if (p / "current").is_file()) if root.is_dir() else []


def remove(name: str) -> Path:
    """Delete library `name`'s index (never the documents it was made from)."""
    root = libraries_dir() / check_name(name)
    if not (root / "current").is_file():
        raise KitError(f"no library named {name!r} (see: python -m research library list)")
    with _locked(root):
        shutil.rmtree(root / (root / "current").read_text().strip(), ignore_errors=True)
        (root / "current").unlink()
    shutil.rmtree(root, ignore_errors=True)
    with _OPEN_LOCK:
        _OPEN.pop(name, None)
    return root


@contextlib.contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KitError(
                f"library {root.name!r} is being updated by another process; wait for it"
            ) from None
        yield

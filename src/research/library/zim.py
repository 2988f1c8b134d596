"""Kiwix ZIM files, read only in bounded child processes: probed, read whole, and searched.

libzim is C++ reading a file the user did not make (a ZIM from a mirror, passed on a USB stick):
a crafted file that crashes or loops it must end a child, never the kit or the page. At index
time `probe()` opens the file in a child, reads its metadata, searches its full-text index once
and reads a sample of entries from the whole archive (PROBE_SAMPLE, not only its first); a ZIM
without its own index then has every article read by `articles()` in a child that writes one
line per article, under a memory bound and a deadline between articles. Nothing of a ZIM is read
in the kit's own process. Each child is handed the file already open (research.files:
a regular file under the library's folders) and reads it as /dev/fd/N.

A ZIM with its own full-text index (Kiwix's Wikipedia files have one) is searched at question
time by a worker child (`SEARCHER`, `python -m research.library.zim serve`): libzim finds the
articles, the worker reduces each once into passages it keeps in a bounded cache (CACHE_CHARS),
and ranks them by BM25. The caller waits at most its time budget (research.library.store's
SEARCH_BUDGET_S), then ends the worker and answers from the stored passages alone. A 160 KB
article of unclosed comments once cost 10.5 s a question on the page's model thread; the
reducers are linear now, and whatever a ZIM does, it costs a question at most the budget.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from research import child, files
from research.errors import KitError
from research.library import ranking
from research.library import sources as src
from research.paths import PACKAGE_PARENT
from research.units import MB

#: Bytes of a ZIM article read at most (Wikipedia's longest articles are ~1 MB of HTML).
MAX_ZIM_ARTICLE_BYTES = 8 * MB
#: Characters of an entry's path kept for showing where a passage comes from.
MAX_ENTRY_PATH_CHARS = 200
#: Entries read by the probe, spread evenly over the archive (first and last included).
PROBE_SAMPLE = 32
#: Seconds the probe may take: opening, one search and the sample, on a large Wikipedia file.
PROBE_TIMEOUT_S = 60
#: Seconds one article may take to become passages (the reducers are linear: an 8 MB article
#: takes a few seconds), and, with some slack, the silence allowed between two articles.
ARTICLE_TIMEOUT_S = 30
#: Heap and private memory (RLIMIT_DATA) a ZIM child may add to what it holds once started:
#: libzim's caches, one 8 MB article and its passages, and the worker's cache fit in a fraction.
#: RLIMIT_DATA, not RLIMIT_AS: libzim maps the file read-only, and a 90 GB Wikipedia must map.
ZIM_MEMORY_MB = 1024
#: Share of a search's budget the worker spends reducing articles: the rest is for libzim's
#: search, the ranking and the reply. An article not reduced in time is left out of the answer.
REDUCE_SHARE = 0.7
#: Seconds an article may have had to be reduced at question time before, failing, it is passed
#: over for the worker's life, so that later questions do not pay for it again (an 8 MB article
#: takes ~3 s here; a Wikipedia article of ordinary size, milliseconds).
SLOW_S = 0.5
#: Characters of passages the question-time worker keeps (about 10 long Wikipedia articles):
#: a question asked again, or a passage opened from the page, costs no reduction.
CACHE_CHARS = 16_000_000
#: Articles of a ZIM's own full-text search cut into passages per question: enough to find the
#: passage that answers (the search ranks articles, not passages), few enough to stay fast.
ZIM_ARTICLES = 6
#: Seconds the question-time worker may take to start (Python, libzim, bm25s: about 1 s here;
#: a phone after a reboot is many times slower). Not counted in a search's budget.
START_S = 30
#: CPU seconds one request of the worker may use: ends a worker spinning after its parent died.
WORKER_CPU_S = 60
CRASH_HINT = ": the file is damaged or hostile"

_SRC = PACKAGE_PARENT  # the folder holding `research`: the child's working folder


# ---- in the child ----


def _open(spec: str):
    try:
        from libzim.reader import Archive
    except ImportError:  # no wheel for this platform (Android): the rest of the library works
        raise KitError("reading ZIM files needs libzim: pip install libzim") from None
    try:
        return Archive(spec)
    except Exception as e:  # libzim raises RuntimeError and others for a damaged file
        raise KitError(f"not a readable ZIM file ({' '.join(str(e).split())[:160]})") from None


def _title(archive) -> str:
    try:
        return src.cap_title(files.clean(bytes(archive.get_metadata("Title")).decode("utf-8", "replace")))
    except Exception:
        return ""


def _article(
    archive, index: int, max_chars: int, deadline: float | None = None
) -> tuple[str, str, list[tuple[str, str]]] | None:
    """(entry path, title, passages) of entry `index`, or None when it is not a text article (an
    image, a redirect, a style sheet) or is too large; KitError when it cannot be read, or not
    before `deadline` (time.monotonic(); ARTICLE_TIMEOUT_S from now by default)."""
    try:
        entry = archive._get_entry_by_id(index)
        if entry.is_redirect:
            return None
        item = entry.get_item()
        mime = item.mimetype.split(";")[0].strip().lower()
        if mime not in ("text/html", "text/plain") or item.size > MAX_ZIM_ARTICLE_BYTES:
            return None
        text = files.clean(bytes(item.content)[:MAX_ZIM_ARTICLE_BYTES].decode("utf-8", errors="replace"))
        title, path = src.cap_title(files.clean(entry.title)), files.shown(entry.path)[:MAX_ENTRY_PATH_CHARS]
    except Exception as e:
        raise KitError(f"entry {index} cannot be read ({' '.join(str(e).split())[:120]})") from None
    deadline = deadline or time.monotonic() + ARTICLE_TIMEOUT_S
    if mime == "text/plain":
        doc = src.Document(title, src.text_to_blocks(text[: src.MAX_DOC_CHARS], deadline))
    else:
        page_title, blocks = src.html_to_blocks(text[: src.MAX_DOC_CHARS], deadline)
        doc = src.Document(title or page_title, blocks)
    return path, doc.title, src.passages(doc, max_chars)


def _say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")  # ASCII: no U+2028 inside a line
    sys.stdout.flush()


def _probe(spec: str) -> None:
    """Open, read the metadata, search once, read a sample of entries; print what the index keeps."""
    archive = _open(spec)
    n = archive.entry_count
    if archive.has_fulltext_index:
        from libzim.search import Query, Searcher

        Searcher(archive).search(Query().set_query("the")).getEstimatedMatches()
    for index in sorted({0, n - 1, *(i * n // PROBE_SAMPLE for i in range(PROBE_SAMPLE))} if n else ()):
        try:
            _article(archive, index, src.MAX_PASSAGE_CHARS)
        except KitError:
            pass  # a damaged entry costs that entry; a crash or a hang ends the probe
    _say(
        {
            "title": _title(archive),
            "uuid": str(archive.uuid),
            "fulltext": bool(archive.has_fulltext_index),
            "articles": archive.article_count,
            "entries": n,
        }
    )


def _read(spec: str, max_chars: int) -> None:
    """Every article's passages, one line each: {"e": entry path, "d": title, "p": [[section, text]]}."""
    archive = _open(spec)
    _say({"entries": archive.entry_count})
    unreadable = 0
    for index in range(archive.entry_count):
        try:
            found = _article(archive, index, max_chars)
        except KitError:
            unreadable += 1
            continue
        if found is not None:
            path, title, passages = found
            _say({"i": index, "e": path, "d": title, "p": passages})
    _say({"unreadable": unreadable})


class _Cache:
    """Articles reduced to passages, the least recently used dropped past CACHE_CHARS."""

    def __init__(self, limit: int = CACHE_CHARS):
        self.limit, self.size = limit, 0
        self.items: collections.OrderedDict = collections.OrderedDict()
        self.reduced = 0  # articles reduced (not found in the cache) since the worker started

    def get(self, archive, key: tuple[str, int], max_chars: int, deadline: float | None = None):
        """The article `key` (file, entry), reduced now if it is not kept; one that could not be
        reduced before `deadline` with at least SLOW_S to do it is kept as None (passed over from
        then on: a question must not pay for it again)."""
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        allowance = (deadline - time.monotonic()) if deadline else ARTICLE_TIMEOUT_S
        try:
            found = _article(archive, key[1], max_chars, deadline)
        except src.SourceError:
            if allowance < SLOW_S:
                raise  # out of time because of the articles before it: tried again next time
            found = None
        self.reduced += 1
        self.items[key] = found
        self.size += sum(len(t) for _, t in found[2]) if found else 0
        while self.size > self.limit and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.size -= sum(len(t) for _, t in old[2]) if old else 0
        return found


def _serve() -> None:
    """The question-time worker: one JSON request a line on stdin, one JSON reply a line."""
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the kit's answer, not the worker
    src.limit_child(None, ZIM_MEMORY_MB, "RLIMIT_DATA")
    archives: dict[str, object] = {}
    cache = _Cache()

    def archive_of(req: dict):
        path = req["path"]
        if path not in archives:
            with files.opened(Path(path), [Path(r) for r in req["roots"]]) as fd:
                archives[path] = _open(f"/dev/fd/{fd}")
        return archives[path]

    def search(req: dict) -> dict:
        from libzim.search import Query, Searcher

        archive, terms = archive_of(req), req["terms"]
        searcher, found = Searcher(archive), {}
        # libzim's query parser joins words with AND and finds nothing for words it never
        # indexed: all the question's words first, then each word alone fills the rest.
        for q in [" ".join(terms), *(terms if len(terms) > 1 else [])]:
            for path in searcher.search(Query().set_query(q)).getResults(0, ZIM_ARTICLES):
                found.setdefault(path, len(found))
            if len(found) >= ZIM_ARTICLES:
                break
        before, candidates = cache.reduced, []
        # what is not reduced by then is left out, so the reply comes within the caller's budget
        deadline = time.monotonic() + REDUCE_SHARE * float(req.get("budget") or ARTICLE_TIMEOUT_S)
        paths = list(found)[:ZIM_ARTICLES]
        for i, path in enumerate(paths):
            # each article its share of the time left: a slow one cannot starve those after it
            share = (deadline - time.monotonic()) / (len(paths) - i)
            if share <= 0:
                break
            try:
                index = archive.get_entry_by_path(path)._index
                article = cache.get(archive, (req["path"], index), req["max_chars"], time.monotonic() + share)
            except Exception:  # one unreadable article costs that article only
                continue
            if article is not None:
                entry_path, title, passages = article
                for pos, (sec, text) in enumerate(passages, 1):
                    candidates.append((index, entry_path, pos, ranking.title_of(title, sec), text))
        ranked = ranking.bm25_rank([f"{c[3]}\n{c[4]}" for c in candidates], req["query"], req["k"])
        hits = [[*candidates[i], score] for i, score in ranked]
        return {"hits": hits, "reduced": cache.reduced - before}

    def passages(req: dict) -> dict:
        deadline = time.monotonic() + REDUCE_SHARE * float(req.get("budget") or ARTICLE_TIMEOUT_S)
        article = cache.get(archive_of(req), (req["path"], req["entry"]), req["max_chars"], deadline)
        if article is None:
            raise KitError(f"entry {req['entry']} is no text article")
        entry_path, title, found = article
        return {"path": entry_path, "passages": [[ranking.title_of(title, s), t] for s, t in found]}

    _say({"ready": os.getpid()})
    for line in sys.stdin:
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft, hard = (
            int(used.ru_utime + used.ru_stime) + WORKER_CPU_S,
            resource.getrlimit(resource.RLIMIT_CPU)[1],
        )
        resource.setrlimit(
            resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
        )
        try:
            req = json.loads(line)
            reply = search(req) if req["op"] == "search" else passages(req)
        except KitError as e:
            reply = {"error": str(e)}
        except MemoryError:
            cache.items.clear()
            cache.size = 0
            reply = {"error": f"the ZIM file needed more than {ZIM_MEMORY_MB} MB{CRASH_HINT}"}
        except Exception as e:
            reply = {"error": f"the ZIM file could not be searched ({type(e).__name__}){CRASH_HINT}"}
        _say(reply)


def _main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        _serve()
        return
    if argv[:1] not in (["probe"], ["read"]):
        raise KitError("usage: python -m research.library.zim probe FD | read FD MAX_CHARS | serve")
    src.limit_child(PROBE_TIMEOUT_S if argv[0] == "probe" else None, ZIM_MEMORY_MB, "RLIMIT_DATA")
    spec = f"/dev/fd/{int(argv[1])}"
    if argv[0] == "probe":
        _probe(spec)
    else:
        _read(spec, int(argv[2]))


# ---- in the kit's process ----


def probe(path: Path, roots: Sequence[Path] = (), timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Open a ZIM, search it once and read a sample of its entries in a child process; its
    {"title", "uuid", "fulltext", "articles", "entries"}. SourceError in one line."""
    try:
        with files.opened(path, roots) as fd:
            r = child.run(
                child.python_module("research.library.zim", "probe", fd),
                "opening the ZIM file",
                timeout=timeout,
                crash_hint=CRASH_HINT,
                cwd=_SRC,
                pass_fds=(fd,),
            )
        info = json.loads(r.stdout.rstrip("\n").rsplit("\n", 1)[-1])
    except KitError as e:
        raise src.SourceError(str(e)) from None
    except ValueError:
        raise src.SourceError("opening the ZIM file gave no answer: the file is damaged or hostile") from None
    return info


def articles(path: Path, roots: Sequence[Path], max_chars: int) -> Iterator[dict]:
    """Every article of a ZIM as it is read in a child: {"entries": N} first, then one
    {"i", "e", "d", "p"} per article, then {"unreadable": n}. SourceError in one line."""
    lines = None
    try:
        with files.opened(path, roots) as fd:
            lines = child.stream_lines(
                child.python_module("research.library.zim", "read", fd, max_chars),
                "reading the ZIM file",
                idle_timeout=ARTICLE_TIMEOUT_S + 30,
                timeout_hint=" (an article may be built to make readers loop)",
                crash_hint=CRASH_HINT,
                cwd=_SRC,
                pass_fds=(fd,),
            )
            first = next(lines, b"{}")  # the child has its own copy of the file from here on
        yield json.loads(first)
        for line in lines:
            yield json.loads(line)
    except KitError as e:
        raise src.SourceError(str(e)) from None
    except ValueError:
        raise src.SourceError(
            "reading the ZIM file gave a damaged line: the file is damaged or hostile"
        ) from None
    finally:
        if lines is not None:
            lines.close()  # read no further: the child is ended now, not when collected


class Searcher:
    """The question-time worker, shared by the threads of one process (one request at a time)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._worker: child.Worker | None = None

    def _new(self) -> child.Worker:
        return child.Worker(
            child.python_module("research.library.zim", "serve"),
            "searching the ZIM file",
            START_S,
            crash_hint=CRASH_HINT,
            cwd=_SRC,
        )

    def start(self) -> None:
        """Start the worker now, without waiting for it: the first question then waits less."""
        with self._lock:
            if self._worker is None or not self._worker.alive():
                self._worker = self._new()

    def call(self, request: dict, timeout: float) -> dict:
        """The worker's reply within `timeout` seconds (its start not counted); KitError in one
        line past it, or when the worker dies (it is ended, and the next call starts another)."""
        with self._lock:
            if self._worker is None or not self._worker.alive():
                self._worker = self._new()
            try:
                reply = self._worker.call(request, timeout)
            except KitError:
                self._worker = None
                raise
        if "error" in reply:
            raise src.SourceError(str(reply["error"]))
        return reply

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None


SEARCHER = Searcher()
atexit.register(SEARCHER.close)


if __name__ == "__main__":
    child.child_main(_main)

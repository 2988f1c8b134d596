"""Kiwix ZIM files (research.library.zim): small archives made with libzim's own writer, each
entry's expected article, line and reply written out by hand.

The kit reads a ZIM only in child processes; the children's code (_open, _article, _probe, _read,
_Cache, _serve, _main) is run here in the test's own process on these trusted files, so that it is
seen to do what it says (and mutation testing sees which test reaches it). The parent's side
(probe, articles, Searcher) is run with its real children, or with a stand-in child that reports
what it was given.
"""

import io
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import research
from research.errors import KitError
from research.library import sources as src
from research.library import zim

#: The entries of the fixture archive, in libzim's order (by path): (path, title, mimetype, content).
ENTRIES = [
    ("A/Alpha", "Alpha", "text/html", "<html><head><title>Page T</title></head><body><h1>Alpha head</h1>"
     "<p>Alpha text.</p></body></html>"),
    ("A/Beta", "", "text/html", "<title>Beta page</title><p>Beta text.</p>"),  # libzim: the path as title
    ("A/Notes", "Notes", "text/plain", "Plain notes here."),
    ("A/Typed", "Typed", "TEXT/HTML; charset=utf-8", "<p>Typed text.</p>"),  # 18 bytes
    ("I/pic.png", "pic", "image/png", "\x89PNG"),
]  # fmt: skip
#: Each entry as _article reads it (index 3 is a redirect to A/Alpha, 5 an image).
ARTICLES = [
    ("A/Alpha", "Alpha", [("Alpha head", "Alpha text.")]),
    ("A/Beta", "A/Beta", [("", "Beta text.")]),
    ("A/Notes", "Notes", [("", "Plain notes here.")]),
    None,
    ("A/Typed", "Typed", [("", "Typed text.")]),
    None,
]


#: What reading the `wiki` archive gives, line by line, written out by hand: its entry count, each
#: article with its passages (3, a redirect, and 5, an image, passed over), and how many could not
#: be read.
READ_WIKI = [
    {"entries": 6},
    {"i": 0, "e": "A/Alpha", "d": "Alpha", "p": [["Alpha head", "Alpha text."]]},
    {"i": 1, "e": "A/Beta", "d": "A/Beta", "p": [["", "Beta text."]]},
    {"i": 2, "e": "A/Notes", "d": "Notes", "p": [["", "Plain notes here."]]},
    {"i": 4, "e": "A/Typed", "d": "Typed", "p": [["", "Typed text."]]},
    {"unreadable": 0},
]


def make_zim(
    path: Path, entries, fulltext: bool, title: str | None = "  Test\n wiki ", redirect=True
) -> Path:
    from libzim.writer import Creator, Hint, Item, StringProvider

    class Page(Item):
        def __init__(self, path, title, mime, content):
            super().__init__()
            self.p, self.t, self.m, self.c = path, title, mime, content

        def get_path(self):
            return self.p

        def get_title(self):
            return self.t

        def get_mimetype(self):
            return self.m

        def get_contentprovider(self):
            return StringProvider(self.c)

        def get_hints(self):
            return {Hint.FRONT_ARTICLE: True}

    with Creator(str(path)).config_indexing(fulltext, "eng") as creator:
        if title is not None:
            creator.add_metadata("Title", title)
        creator.add_metadata("Language", "eng")
        for entry in entries:
            creator.add_item(Page(*entry))
        if redirect:
            creator.add_redirection("A/Redirect", "Redirect", "A/Alpha", {Hint.FRONT_ARTICLE: True})
    return path


@pytest.fixture(scope="module")
def wiki(tmp_path_factory) -> Path:
    """The fixture archive, with its own full-text index, alone in its folder."""
    return make_zim(tmp_path_factory.mktemp("zims") / "wiki.zim", ENTRIES, fulltext=True)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """200 pages, no full-text index, no title."""
    pages = [(f"A/P{i:03d}", f"Page {i}", "text/html", f"<p>Page {i} of the wiki.</p>") for i in range(200)]
    return make_zim(tmp_path_factory.mktemp("zims") / "big.zim", pages, False, title=None, redirect=False)


def archive(path: Path):
    from libzim.reader import Archive

    return Archive(str(path))


# ---- a stand-in archive, for what no libzim writer makes (lying sizes, bytes not UTF-8) ----


class FakeEntry:
    def __init__(
        self, path="A/x", title="X", mime="text/html", content=b"<p>x</p>", size=None, redirect=False
    ):
        self.path, self.title, self.is_redirect = path, title, redirect
        self.item = SimpleNamespace(
            mimetype=mime, content=content, size=len(content) if size is None else size
        )

    def get_item(self):
        return self.item


class FakeArchive:
    def __init__(self, *entries, error: Exception | None = None, metadata=None):
        self.entries, self.error, self.metadata = entries, error, metadata

    def _get_entry_by_id(self, index):
        if self.error:
            raise self.error
        return self.entries[index]

    def get_metadata(self, name):
        if self.metadata is None:
            raise RuntimeError(f"no {name}")
        return self.metadata


# ---- in the child ----


def test_open_reads_a_zim_and_names_what_is_wrong_in_one_line(wiki, tmp_path, monkeypatch):
    assert zim._open(str(wiki)).entry_count == 6
    (tmp_path / "bad.zim").write_bytes(b"ZIM\x04" + b"\x00" * 100)
    with pytest.raises(KitError) as e:
        zim._open(str(tmp_path / "bad.zim"))
    assert str(e.value) == "not a readable ZIM file (Invalid version)"
    missing = tmp_path / ("x" * 200)
    with pytest.raises(KitError) as e:
        zim._open(str(missing))
    said = "Error opening ZIM file: " + str(missing)
    assert str(e.value) == f"not a readable ZIM file ({said[:160]})"  # libzim's message, cut
    monkeypatch.setitem(sys.modules, "libzim.reader", None)  # no wheel for this platform
    with pytest.raises(KitError) as e:
        zim._open(str(wiki))
    assert str(e.value) == "reading ZIM files needs libzim: pip install libzim"


def test_title_is_the_metadata_on_one_line(wiki, big):
    assert zim._title(archive(wiki)) == "Test wiki"
    assert zim._title(archive(big)) == ""  # none
    assert zim._title(FakeArchive(metadata=b"caf\xe9 \x1b[2J wiki")) == "caf\ufffd [2J wiki"
    assert zim._title(FakeArchive(metadata=b"word " * 30)) == "word " * 19 + "word\u2026"  # 100 characters


def test_article_reads_html_and_plain_text_and_passes_over_the_rest(wiki):
    a = archive(wiki)
    assert [zim._article(a, i, 600) for i in range(6)] == ARTICLES
    with pytest.raises(KitError) as e:
        zim._article(a, 99, 600)
    assert str(e.value) == "entry 99 cannot be read (entry index out of range)"
    with pytest.raises(src.SourceError):  # plain text: checked before it is read
        zim._article(a, 2, 600, time.monotonic() - 1)
    with pytest.raises(src.SourceError):  # html: checked every 4096 tags
        zim._article(FakeArchive(FakeEntry(content=b"<p>x</p>" * 2100)), 0, 600, time.monotonic() - 1)


def test_article_passages_are_cut_at_max_chars(wiki):
    words = "Sentence one is here. Sentence two is here."
    a = FakeArchive(FakeEntry(content=f"<p>{words}</p>".encode()))
    assert zim._article(a, 0, 600) == ("A/x", "X", [("", words)])
    assert zim._article(a, 0, 30) == (
        "A/x",
        "X",
        [("", "Sentence one is here."), ("", "Sentence two is here.")],
    )


def test_article_default_deadline_is_thirty_seconds(wiki, monkeypatch):
    seen = []
    real = src.html_to_blocks
    monkeypatch.setattr(src, "html_to_blocks", lambda text, deadline: seen.append(deadline) or real(text))
    before = time.monotonic()
    zim._article(archive(wiki), 0, 600)
    after = time.monotonic()
    zim._article(archive(wiki), 0, 600, 1234.5)
    assert before + 30 <= seen[0] <= after + 30 and seen[1] == 1234.5


def test_article_caps_sizes_paths_and_titles_and_replaces_bad_bytes(wiki, monkeypatch):
    a = archive(wiki)
    monkeypatch.setattr(zim, "MAX_ZIM_ARTICLE_BYTES", 18)
    assert zim._article(a, 4, 600) == ARTICLES[4]  # 18 bytes: at the cap
    monkeypatch.setattr(zim, "MAX_ZIM_ARTICLE_BYTES", 17)
    assert zim._article(a, 4, 600) is None
    # an item whose size says less than its content holds is read to the cap only
    monkeypatch.setattr(zim, "MAX_ZIM_ARTICLE_BYTES", 5)
    assert zim._article(FakeArchive(FakeEntry(content=b"<p>abcdefgh</p>", size=5)), 0, 600) == (
        "A/x",
        "X",
        [("", "ab")],
    )
    monkeypatch.undo()
    long = FakeEntry(path="A/" + "p" * 300 + "\x1b", title="T\x1bitle", content=b"<p>caf\xe9</p>")
    assert zim._article(FakeArchive(long), 0, 600) == ("A/" + "p" * 198, "Title", [("", "caf\ufffd")])
    # an entry without a title of its own takes the page's
    untitled = FakeEntry(title=" ", mime=" Text/Plain ;x", content=b"plain words")
    assert zim._article(FakeArchive(untitled), 0, 600) == ("A/x", "", [("", "plain words")])
    page = FakeEntry(title="", content=b"<title>Page title</title><p>words</p>")
    assert zim._article(FakeArchive(page), 0, 600) == ("A/x", "Page title", [("", "words")])
    assert zim._article(FakeArchive(FakeEntry(redirect=True)), 0, 600) is None


def test_article_errors_are_one_line_of_at_most_120_characters():
    with pytest.raises(KitError) as e:
        zim._article(FakeArchive(error=ValueError("bad \n entry " + "x" * 200)), 7, 600)
    assert str(e.value) == "entry 7 cannot be read (bad entry " + "x" * 110 + ")"


def test_say_writes_one_ascii_line(capsys):
    zim._say({"t": "caf\u00e9\u2028"})
    assert capsys.readouterr().out == '{"t": "caf\\u00e9\\u2028"}\n'


def test_probe_prints_what_the_index_keeps(wiki, big, capsys):
    zim._probe(str(wiki))
    out = capsys.readouterr().out.splitlines()
    uuid = str(archive(wiki).uuid)
    assert [json.loads(line) for line in out] == [
        {"title": "Test wiki", "uuid": uuid, "fulltext": True, "articles": 6, "entries": 6}
    ]
    zim._probe(str(big))
    assert json.loads(capsys.readouterr().out)["fulltext"] is False  # and no search was tried


def test_probe_reads_a_sample_spread_over_the_archive(big, tmp_path, monkeypatch, capsys):
    read = []

    def spy(a, index, max_chars):
        read.append((index, max_chars, a.entry_count))  # the archive itself
        if index == 0:
            raise KitError("a damaged entry")  # costs that entry only
        return None

    monkeypatch.setattr(zim, "_article", spy)
    zim._probe(str(big))
    assert json.loads(capsys.readouterr().out)["entries"] == 200
    # i * 200 // 32 for i in 0..31, and the last entry
    sample = [0, 6, 12, 18, 25, 31, 37, 43, 50, 56, 62, 68, 75, 81, 87, 93, 100, 106, 112, 118, 125]
    sample += [131, 137, 143, 150, 156, 162, 168, 175, 181, 187, 193, 199]
    assert read == [(i, 600, 200) for i in sample]
    read.clear()
    empty = make_zim(tmp_path / "empty.zim", [], False, redirect=False)
    zim._probe(str(empty))
    assert read == [] and json.loads(capsys.readouterr().out)["entries"] == 0


def test_read_prints_every_article_then_the_unreadable_count(wiki, monkeypatch, capsys):
    zim._read(str(wiki), 600)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == READ_WIKI
    seen = []
    real = zim._article

    def damaged(a, index, max_chars):
        seen.append(max_chars)
        if index in (1, 2):
            raise KitError("damaged")
        return real(a, index, max_chars)

    monkeypatch.setattr(zim, "_article", damaged)
    zim._read(str(wiki), 20)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("i") for line in lines] == [None, 0, 4, None] and lines[-1] == {"unreadable": 2}
    assert seen == [20] * 6


class Articles:
    """A stand-in for _article: {index: passages text or None or an exception}; records its calls."""

    def __init__(self, texts: dict):
        self.texts, self.calls = texts, []

    def __call__(self, archive, index, max_chars, deadline=None):
        self.calls.append((index, max_chars, deadline))
        found = self.texts[index]
        if isinstance(found, BaseException):
            raise found
        return None if found is None else (f"A/{index}", f"T{index}", [("", t) for t in found])


def test_cache_keeps_the_least_recently_used_out_past_its_limit(monkeypatch):
    fake = Articles({1: ["aaaa"], 2: ["bbb", "bbb"], 3: ["cc"], 4: None})
    monkeypatch.setattr(zim, "_article", fake)
    cache = zim._Cache(limit=10)
    assert cache.get("a", ("f", 1), 600) == ("A/1", "T1", [("", "aaaa")])
    assert cache.get("a", ("f", 2), 600)[2] == [("", "bbb"), ("", "bbb")]
    assert (cache.size, list(cache.items)) == (10, [("f", 1), ("f", 2)])  # at the limit: both kept
    assert cache.get("a", ("f", 1), 600) == ("A/1", "T1", [("", "aaaa")])  # kept: not reduced again
    assert cache.reduced == 2 and [c[0] for c in fake.calls] == [1, 2]
    cache.get("a", ("f", 3), 600)  # past the limit: 2 is the least recently used
    assert (cache.size, list(cache.items), cache.reduced) == (6, [("f", 1), ("f", 3)], 3)
    assert cache.get("a", ("f", 4), 600) is None  # no text article: kept as None
    assert cache.get("a", ("f", 4), 600) is None and [c[0] for c in fake.calls] == [1, 2, 3, 4]
    assert (cache.size, cache.reduced) == (6, 4)

    small = zim._Cache(limit=3)
    small.get("a", ("f", 4), 600)
    small.get("a", ("f", 2), 600)  # larger than the limit: kept alone, the None before it goes
    assert (small.size, list(small.items)) == (6, [("f", 2)])
    small.get("a", ("f", 1), 600)
    assert (small.size, list(small.items)) == (4, [("f", 1)])
    assert zim._Cache().limit == 16_000_000 and zim._Cache().size == 0


def test_cache_passes_over_an_article_too_slow_for_its_share(monkeypatch):
    fake = Articles({1: src.SourceError("slow"), 2: src.SourceError("slow"), 3: src.SourceError("slow")})
    monkeypatch.setattr(zim, "_article", fake)
    monkeypatch.setattr(zim, "time", SimpleNamespace(monotonic=lambda: 100.0))
    cache = zim._Cache()
    assert cache.get("a", ("f", 1), 50, 100.5) is None  # had SLOW_S (0.5 s) and failed: passed over
    assert cache.get("a", ("f", 1), 50, 100.5) is None and cache.reduced == 1
    with pytest.raises(src.SourceError):  # less time than that: out of time, tried again next time
        cache.get("a", ("f", 2), 50, 100.4)
    assert cache.reduced == 1 and ("f", 2) not in cache.items
    assert cache.get("a", ("f", 3), 50) is None  # no deadline: ARTICLE_TIMEOUT_S to do it
    assert fake.calls == [(1, 50, 100.5), (2, 50, 100.4), (3, 50, None)]


@pytest.fixture
def serve(monkeypatch, capsys):
    """Run the worker here on request lines; (its replies, the limits and signals it set)."""
    calls = []
    monkeypatch.setattr(zim.signal, "signal", lambda *a: calls.append(("signal", *a)))
    monkeypatch.setattr(zim.src, "limit_child", lambda *a: calls.append(("limit", *a)))
    monkeypatch.setattr(resource, "setrlimit", lambda *a: calls.append(("rlimit", *a)))
    hard = [resource.RLIM_INFINITY]

    def getrusage(who):
        calls.append(("getrusage", who))
        return SimpleNamespace(ru_utime=1.25, ru_stime=2.5)

    def getrlimit(which):
        calls.append(("getrlimit", which))
        return (resource.RLIM_INFINITY, hard[0])

    monkeypatch.setattr(resource, "getrusage", getrusage)
    monkeypatch.setattr(resource, "getrlimit", getrlimit)

    def run(*requests, cpu_hard=resource.RLIM_INFINITY):
        hard[0] = cpu_hard
        calls.clear()
        lines = [r if isinstance(r, str) else json.dumps(r) for r in requests]
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
        zim._serve()
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert out[0] == {"ready": os.getpid()}
        return out[1:], calls

    return run


def request(wiki: Path, op: str, **kw) -> dict:
    return {"op": op, "path": str(wiki), "roots": [str(wiki.parent)], "max_chars": 600, **kw}


def hits(reply: dict) -> list:
    """The hits without their BM25 scores (checked to be positive)."""
    assert all(h[-1] > 0 for h in reply["hits"])
    return [h[:-1] for h in reply["hits"]]


def test_worker_searches_with_libzims_index_and_keeps_what_it_reduced(wiki, serve):
    alpha = request(wiki, "search", query="alpha text", terms=["alpha"], k=3, budget=5)
    both = request(wiki, "search", query="alpha beta", terms=["alpha", "beta"], k=3)
    replies, calls = serve(alpha, alpha, both)
    assert hits(replies[0]) == [[0, "A/Alpha", 1, "Alpha › Alpha head", "Alpha text."]]
    assert replies[0]["reduced"] == 1 and replies[1] == replies[0] | {"reduced": 0}
    # "alpha beta" finds nothing (libzim joins words with AND): each word alone then
    assert sorted(hits(replies[2])) == [[0, "A/Alpha", 1, "Alpha › Alpha head", "Alpha text."],
                                        [1, "A/Beta", 1, "A/Beta", "Beta text."]]  # fmt: skip
    assert replies[2]["reduced"] == 1  # Alpha was kept
    cpu = [  # before each request: 3 s used, 60 more
        ("getrusage", resource.RUSAGE_SELF),
        ("getrlimit", resource.RLIMIT_CPU),
        ("rlimit", resource.RLIMIT_CPU, (63, resource.RLIM_INFINITY)),
    ]
    assert calls == [
        ("signal", signal.SIGINT, signal.SIG_IGN),
        ("limit", None, 1024, "RLIMIT_DATA"),
        *cpu * 3,
    ]
    replies, calls = serve(alpha, cpu_hard=50)
    assert calls[-1] == ("rlimit", resource.RLIMIT_CPU, (50, 50))


def test_worker_search_stops_at_six_articles_and_at_its_budget(tmp_path, serve):
    pages = [(f"A/H{i}", f"H{i}", "text/html", f"<p>Harbour lantern {i}.</p>") for i in range(8)]
    folder = tmp_path / "z"
    folder.mkdir()
    path = make_zim(folder / "h.zim", pages, True, redirect=False)
    replies, _ = serve(
        request(path, "search", query="harbour lantern", terms=["harbour", "lantern"], k=10, budget=5),
        request(path, "search", query="harbour", terms=["harbour"], k=10, budget=1e-9),
    )
    assert replies[0]["reduced"] == 6 and len(replies[0]["hits"]) == 6
    assert replies[1] == {"hits": [], "reduced": 0}  # no time left to reduce any


def test_worker_search_without_a_budget_has_thirty_seconds(wiki, serve, monkeypatch):
    seen = []
    real = zim._article

    def spy(a, index, max_chars, deadline=None):
        seen.append(deadline - time.monotonic())
        return real(a, index, max_chars, deadline)

    monkeypatch.setattr(zim, "_article", spy)
    serve(request(wiki, "search", query="alpha", terms=["alpha"], k=3))
    assert 20 < seen[0] <= 21  # 0.7 of 30 s, the one article its whole share


def test_worker_ranks_passages_by_their_titles_too(wiki, serve):
    # libzim finds the article by "alpha"; of the query, only the heading holds "head"
    replies, _ = serve(request(wiki, "search", query="head", terms=["alpha"], k=3))
    assert hits(replies[0]) == [[0, "A/Alpha", 1, "Alpha › Alpha head", "Alpha text."]]


def test_worker_asks_libzim_for_all_the_words_first(tmp_path, serve):
    """Six short pages say "lantern"; one long page says "harbour lantern". By "lantern" alone
    libzim ranks the long page seventh, past the six articles read: all the words together find it."""
    pages = [(f"A/L{i}", f"L{i}", "text/html", "<p>Lantern.</p>") for i in range(6)]
    both = "<p>The harbour lantern is lit at dusk by the keeper of the old harbour.</p>"
    folder = tmp_path / "z"
    folder.mkdir()
    path = make_zim(folder / "l.zim", [*pages, ("A/Both", "Both", "text/html", both)], True, redirect=False)
    query = request(path, "search", query="harbour lantern", terms=["lantern", "harbour"], k=10, budget=5)
    replies, _ = serve(query)
    assert replies[0]["reduced"] == 6 and "A/Both" in [h[1] for h in replies[0]["hits"]]


def test_worker_shares_its_time_and_passes_over_an_unreadable_article(wiki, serve, monkeypatch):
    seen = []
    real = zim._article

    def spy(a, index, max_chars, deadline=None):
        seen.append((index, max_chars, None if deadline is None else deadline - time.monotonic()))
        if index == 0 and len(seen) == 1:
            raise RuntimeError("unreadable")  # that article is left out, not the rest
        return real(a, index, max_chars, deadline)

    monkeypatch.setattr(zim, "_article", spy)
    both = request(wiki, "search", query="alpha beta", terms=["alpha", "beta"], k=3, budget=10)
    replies, _ = serve(
        both,
        request(wiki, "passages", entry=0, max_chars=50, budget=10),
        request(wiki, "passages", entry=2, max_chars=40),
    )
    assert hits(replies[0]) == [[1, "A/Beta", 1, "A/Beta", "Beta text."]]
    assert replies[1] == {"path": "A/Alpha", "passages": [["Alpha › Alpha head", "Alpha text."]]}
    assert [s[:2] for s in seen] == [(0, 600), (1, 600), (0, 50), (2, 40)]
    left = [s[2] for s in seen]
    # 0.7 of the budget: the first of two articles half of it, the second what is left
    assert 3.4 < left[0] <= 3.5 and 6.5 < left[1] <= 7 and 6.9 < left[2] <= 7 and 20.9 < left[3] <= 21


def test_worker_passages_and_errors_are_one_reply_each(wiki, tmp_path, serve):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    replies, _ = serve(
        {**request(wiki, "passages", entry=0), "roots": [str(elsewhere)]},  # before it is open
        request(wiki, "passages", entry=0),
        request(wiki, "passages", entry=3),
        {"path": str(wiki)},
        "not json",
        request(wiki, "passages", entry=0, budget=1e-9),
    )
    outside = "a link to a file outside the library's folders: not followed (add its folder to index it)"
    assert replies[0] == {"error": outside}
    assert replies[1] == {"path": "A/Alpha", "passages": [["Alpha › Alpha head", "Alpha text."]]}
    assert replies[2] == {"error": "entry 3 is no text article"}
    hint = ": the file is damaged or hostile"
    assert replies[3] == {"error": f"the ZIM file could not be searched (KeyError){hint}"}
    assert replies[4] == {"error": f"the ZIM file could not be searched (JSONDecodeError){hint}"}
    assert replies[5] == replies[1]  # kept: no reduction, whatever the budget


def test_worker_forgets_what_it_reduced_past_its_memory(wiki, serve, monkeypatch):
    real, cache = zim._article, zim._Cache

    def article(a, index, max_chars, deadline=None):
        if index == 2:
            raise MemoryError
        return real(a, index, max_chars, deadline)

    monkeypatch.setattr(zim, "_article", article)
    # "Alpha text." and "Beta text.": 21 characters, the cache's whole room
    monkeypatch.setattr(zim, "_Cache", lambda: cache(limit=21))
    alpha = request(wiki, "search", query="alpha", terms=["alpha"], k=3)
    both = request(wiki, "search", query="alpha beta", terms=["alpha", "beta"], k=3)
    replies, _ = serve(alpha, alpha, request(wiki, "passages", entry=2), alpha, both, alpha)
    assert [r.get("reduced") for r in replies] == [1, 0, None, 1, 1, 0]  # emptied, then both kept
    assert replies[2] == {"error": "the ZIM file needed more than 1024 MB: the file is damaged or hostile"}
    assert replies[3] == replies[0]


def test_main_runs_the_work_asked_for(monkeypatch):
    calls = []
    monkeypatch.setattr(zim.src, "limit_child", lambda *a: calls.append(("limit", *a)))
    monkeypatch.setattr(zim, "_serve", lambda: calls.append(("serve",)))
    monkeypatch.setattr(zim, "_probe", lambda spec: calls.append(("probe", spec)))
    monkeypatch.setattr(zim, "_read", lambda spec, n: calls.append(("read", spec, n)))
    zim._main(["serve"])
    zim._main(["serve", "ignored"])  # as after probe FD or read FD MAX_CHARS
    zim._main(["probe", "7"])
    zim._main(["read", "8", "600"])
    assert calls == [
        ("serve",),
        ("serve",),
        ("limit", 60, 1024, "RLIMIT_DATA"),
        ("probe", "/dev/fd/7"),
        ("limit", None, 1024, "RLIMIT_DATA"),
        ("read", "/dev/fd/8", 600),
    ]
    for argv in ([], ["search", "7"]):
        with pytest.raises(KitError) as e:
            zim._main(argv)
        assert str(e.value) == "usage: python -m research.library.zim probe FD | read FD MAX_CHARS | serve"


# ---- in the kit's process, with its children ----

#: A stand-in child: says what it was given (its arguments, its working folder, the first bytes
#: of the file handed to it), or misbehaves as its first argument says.
STAND_IN = """
import json, os, signal, sys, time
how = sys.argv[1]
if how == "crash":
    os.kill(os.getpid(), signal.SIGSEGV)
elif how == "sleep":
    time.sleep(10)
elif how == "noise":
    print("noise")
elif how in ("blank after", "x after"):
    print(json.dumps({"a": 1}))
    print(" " if how == "blank after" else "X")  # the last line is the answer, and is none
elif how == "say":
    fd = int(sys.argv[3])
    if sys.argv[2] == "probe":
        print("a line before")  # the probe's answer is its last line
        print("and another")
    print(json.dumps({"args": sys.argv[2:3], "cwd": os.getcwd(), "head": os.read(fd, 3).decode()}))
"""


def stand_in(monkeypatch, how: str) -> list:
    given = []

    def python_module(module, *args):
        given.append((module, *args))
        return [sys.executable, "-c", STAND_IN, how, *(str(a) for a in args)]

    monkeypatch.setattr(zim.child, "python_module", python_module)
    return given


PACKAGE_PARENT = str(Path(research.__file__).resolve().parents[1])


def test_probe_in_a_child(wiki, tmp_path):
    assert zim.probe(wiki, [wiki.parent]) == {
        "title": "Test wiki",
        "uuid": str(archive(wiki).uuid),
        "fulltext": True,
        "articles": 6,
        "entries": 6,
    }
    (tmp_path / "bad.zim").write_bytes(b"ZIM\x04" + b"\x00" * 100)
    with pytest.raises(src.SourceError) as e:
        zim.probe(tmp_path / "bad.zim")
    assert str(e.value) == "not a readable ZIM file (Invalid version)"
    with pytest.raises(src.SourceError, match="^a link to a file outside the library's folders"):
        zim.probe(wiki, [tmp_path])


@pytest.mark.parametrize(
    "how, said",
    [
        ("crash", "opening the ZIM file crashed (SIGSEGV): the file is damaged or hostile"),
        ("noise", "opening the ZIM file gave no answer: the file is damaged or hostile"),
        ("nothing", "opening the ZIM file gave no answer: the file is damaged or hostile"),
        ("blank after", "opening the ZIM file gave no answer: the file is damaged or hostile"),
        ("x after", "opening the ZIM file gave no answer: the file is damaged or hostile"),
    ],
)
def test_probe_names_a_child_that_misbehaves(wiki, monkeypatch, how, said):
    stand_in(monkeypatch, how)
    with pytest.raises(src.SourceError) as e:
        zim.probe(wiki)
    assert str(e.value) == said


def test_probe_hands_the_child_the_open_file_in_the_packages_folder(wiki, monkeypatch):
    given = stand_in(monkeypatch, "say")
    info = zim.probe(wiki)
    assert info == {"args": ["probe"], "cwd": PACKAGE_PARENT, "head": "ZIM"}
    assert given[0][:2] == ("research.library.zim", "probe")
    stand_in(monkeypatch, "sleep")
    with pytest.raises(src.SourceError) as e:
        zim.probe(wiki, timeout=1)
    assert str(e.value) == "opening the ZIM file did not finish within 1 s"


def test_articles_in_a_child(wiki, tmp_path, monkeypatch):
    given = []
    real = zim.child.stream_lines

    def spy(cmd, what, **kwargs):
        given.append((cmd[-3:], what, {k: v for k, v in kwargs.items() if k != "pass_fds"}))
        return real(cmd, what, **kwargs)

    monkeypatch.setattr(zim.child, "stream_lines", spy)
    assert list(zim.articles(wiki, [wiki.parent], 40)) == READ_WIKI
    (cmd, what, kwargs) = given[0]
    assert cmd[0] == "read" and cmd[2] == "40" and what == "reading the ZIM file"
    assert kwargs == {
        "idle_timeout": 60,  # ARTICLE_TIMEOUT_S and 30 s of slack
        "timeout_hint": " (an article may be built to make readers loop)",
        "crash_hint": ": the file is damaged or hostile",
        "cwd": zim._SRC,
    }
    with pytest.raises(src.SourceError, match="^a link to a file outside the library's folders"):
        list(zim.articles(wiki, [tmp_path], 40))


@pytest.mark.parametrize(
    "how, said",
    [
        ("crash", "reading the ZIM file crashed (SIGSEGV): the file is damaged or hostile"),
        ("noise", "reading the ZIM file gave a damaged line: the file is damaged or hostile"),
    ],
)
def test_articles_names_a_child_that_misbehaves(wiki, monkeypatch, how, said):
    stand_in(monkeypatch, how)
    with pytest.raises(src.SourceError) as e:
        list(zim.articles(wiki, [], 40))
    assert str(e.value) == said


def test_articles_hands_the_child_the_open_file_in_the_packages_folder(wiki, monkeypatch):
    stand_in(monkeypatch, "say")
    assert list(zim.articles(wiki, [], 40)) == [{"args": ["read"], "cwd": PACKAGE_PARENT, "head": "ZIM"}]
    stand_in(monkeypatch, "nothing")
    assert list(zim.articles(wiki, [], 40)) == [{}]  # a child that says nothing: no entries


def test_searcher_keeps_one_worker_and_replaces_a_dead_one(wiki, monkeypatch):
    made = []
    real = zim.child.Worker

    def worker(cmd, what, start, **kwargs):
        made.append((cmd, what, start, kwargs))
        return real(cmd, what, start, **kwargs)

    monkeypatch.setattr(zim.child, "Worker", worker)
    s = zim.Searcher()
    try:
        s.start()
        first = s._worker
        s.start()
        assert s._worker is first and first.alive()
        passages = request(wiki, "passages", entry=0)
        assert s.call(passages, 30) == {
            "path": "A/Alpha",
            "passages": [["Alpha › Alpha head", "Alpha text."]],
        }
        with pytest.raises(src.SourceError) as e:
            s.call(request(wiki, "passages", entry=3), 30)
        assert str(e.value) == "entry 3 is no text article" and s._worker is first  # the worker lives on
        first.close()
        s.start()  # a dead worker is replaced
        second = s._worker
        assert second is not first and second.alive()
        second.close()
        assert s.call(passages, 30)["path"] == "A/Alpha" and s._worker not in (first, second)
        with pytest.raises(KitError) as e:
            s.call(passages | {"entry": 1}, 1e-6)
        assert str(e.value) == "searching the ZIM file did not finish within 1e-06 s and was stopped"
        assert s._worker is None  # ended: the next call starts another
        assert s.call(passages, 30)["path"] == "A/Alpha"
    finally:
        s.close()
    assert s._worker is None
    s.close()  # twice: nothing to do
    assert made[0] == (
        [sys.executable, "-m", "research.library.zim", "serve"],
        "searching the ZIM file",
        30,
        {"crash_hint": ": the file is damaged or hostile", "cwd": zim._SRC},
    )
    assert len(made) == 4

"""Property tests of the library's readers: documents generated to be hard (long lines, deep
nesting, many and huge headings, unclosed markup, odd encodings, control characters), each read
within a time and a memory bound, into bounded passages, with nothing raised but the kit's own
one-line error, and indexed at most INDEX_RATIO times its size (plus the files every library
has). hypothesis searches for the worst index it can make (`target`), and the test asserts on it.
"""

import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from library_fixtures import minimal_pdf, write_zim

from research.library import build as library_build
from research.library import sources as src
from research.library import store as library

#: Seconds one generated document (at most a few MB) may take to become passages: the readers
#: are linear and take well under a second here; the super-linear ones took minutes to hours.
TIME_BOUND = 10
#: Memory one document may cost while read, traced by tracemalloc: this many times its size in
#: bytes, plus a fixed allowance (a text of N bytes is up to 4N as a Python string, and its
#: paragraphs and passages are copies).
MEMORY_FACTOR, MEMORY_FIXED = 24, 16 << 20
#: The README's bound on an index: at most INDEX_RATIO times the document's size in bytes, plus
#: INDEX_FIXED for the files every library has (manifest, BM25 parameters, NumPy headers).
INDEX_RATIO, INDEX_FIXED = 5, 16 * 1024
#: Characters that must not survive into a passage, a title or a section name.
CONTROLS = {chr(c) for c in [*range(0, 9), *range(11, 32), *range(127, 160), *range(0x202A, 0x202F)]}
SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# ---- what documents are made of ----

#: A vocabulary drawn per document: words repeat, as in real text. Random unique tokens on every
#: line cost the BM25 vocabulary more (test_library_hostile's measure, and the README, say how much).
vocabulary = st.lists(
    st.text(alphabet=st.characters(categories=["Ll", "Lu", "Nd", "Lo"]), min_size=1, max_size=12),
    min_size=1,
    max_size=60,
)
controls = st.sampled_from(
    ["\x1b]0;title\x07", "\x1b[2J", "\x9b31m", "\r", "\u202e", "\x00", "\x0b", "\x85", "\u2028"]
)
#: Any text at all, controls and unpaired markup characters included.
anything = st.text(max_size=200)


@st.composite
def words(draw, vocab, n_max=200):
    n = draw(st.integers(0, n_max))
    return " ".join(draw(st.sampled_from(vocab)) for _ in range(n))


@st.composite
def repeated(draw, pieces):
    """A short piece repeated up to 50,000 times: long lines and deep nesting, cheaply."""
    return draw(pieces) * draw(st.integers(1, 50_000))


@st.composite
def markdown(draw):
    vocab = draw(vocabulary)
    text = words(vocab)
    line = st.one_of(
        st.builds(lambda n, t: "#" * n + " " + t, st.integers(1, 7), text),  # headings, some not (7 #)
        st.builds(lambda t, n: "# " + t + " " * n + "x #", text, st.integers(0, 20_000)),  # huge heading
        st.builds(lambda t: f"*{t}* **{t}** __{t}__ _{t}_ 2*3*4", text),
        st.builds(lambda t, u: f'[{t}]({u}) ![{t}]({u} "{t}") <{u}>', text, anything),
        st.builds(lambda d, t: ">" * d + " " + t, st.integers(1, 2000), text),  # nested quotes
        st.builds(lambda d, t: "  " * d + "- " + t, st.integers(1, 2000), text),  # nested lists
        st.sampled_from(["```", "~~~", "<script>", "</script>", "<!--", "-->", "<style>", "<svg>", "---"]),
        repeated(
            st.sampled_from(["*a ", "[a](", "![", "<!--", "&#1", "](", "_a_ ", "#", " ", "<a ", "[[]]("])
        ),
        controls,
        anything,
        text,
        st.just(""),
    )
    return "\n".join(draw(st.lists(line, max_size=60)))


@st.composite
def html_page(draw):
    vocab = draw(vocabulary)
    text = words(vocab)
    piece = st.one_of(
        st.builds(lambda n, t: f"<h{n}>{t}</h{n}>", st.integers(1, 6), text),
        st.builds(lambda t: f"<title>{t}</title><p>{t}</p>", text),
        st.builds(lambda d, t: "<div>" * d + t + "</div>" * d, st.integers(1, 5000), text),  # deep nesting
        st.builds(lambda d: "<div>" * d, st.integers(1, 5000)),  # never closed
        st.builds(lambda t: f'<a href="x" title="a>b">{t}</a><img src=y alt="{t}"/><br/>', text),
        st.builds(lambda t: f"<script>{t}</script><style>{t}</style><svg>{t}</svg><head>{t}", text),
        st.builds(lambda t: f"&amp; &#233; &#x1F600; &#99999999999; &bogus; {t}", text),
        repeated(st.sampled_from(["<!--", "</a", "<!", "<p>", "<", "<a ", "&#x", "<script>", "<title>"])),
        controls,
        anything,
        text,
    )
    return "".join(draw(st.lists(piece, max_size=40)))


@st.composite
def plain_text(draw):
    vocab = draw(vocabulary)
    piece = st.one_of(
        words(vocab, 2000), repeated(st.sampled_from(["x", "\n", " \n", "a. ", "\t"])), controls, anything
    )
    return "\n\n".join(draw(st.lists(piece, max_size=30)))


#: How the generated text becomes bytes: the encodings the reader detects, and damaged UTF-8.
ENCODINGS = {
    "utf-8": lambda t: t.encode("utf-8", "surrogatepass"),
    "utf-8 with a BOM": lambda t: "\ufeff".encode() + t.encode("utf-8", "surrogatepass"),
    "utf-16": lambda t: t.encode("utf-16", "surrogatepass"),
    "windows-1252": lambda t: t.encode("cp1252", "replace"),
    "damaged utf-8": lambda t: t.encode("utf-8", "surrogatepass")[::-1][:50_000] + b"\xff\xfe\xc3",
}
KINDS = {"doc.md": markdown(), "doc.html": html_page(), "doc.txt": plain_text()}


def read_bounded(path: Path) -> src.Document | None:
    """Read a document, asserting the time and memory bounds; None for the kit's one-line refusal."""
    size = path.stat().st_size
    tracemalloc.start()
    t = time.perf_counter()
    try:
        doc = src.read(path)
        pieces = src.passages(doc)
    except src.SourceError as e:
        assert "\n" not in str(e)  # one line, and nothing but the kit's own error
        doc = pieces = None
    finally:
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert seconds < TIME_BOUND, f"{path.name} of {size} bytes took {seconds:.1f} s"
    assert peak < MEMORY_FACTOR * size + MEMORY_FIXED, f"{path.name} of {size} bytes took {peak >> 20} MB"
    if doc is not None:
        assert len(doc.title) <= src.MAX_TITLE_CHARS and not CONTROLS & set(doc.title)
        for section, text in pieces:
            assert len(text) <= src.MAX_PASSAGE_CHARS and len(section) <= src.MAX_TITLE_CHARS
            assert not CONTROLS & set(section + text)
    return doc


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_reader_is_bounded_on_generated_documents(tmp_path_factory, name, encoding):
    @settings(max_examples=15, **SETTINGS)
    @given(KINDS[name])
    def check(text):
        path = tmp_path_factory.mktemp("doc") / name
        path.write_bytes(ENCODINGS[encoding](text))
        read_bounded(path)

    check()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "home"))
    library._OPEN.clear()
    yield tmp_path / "home"
    library._OPEN.clear()


_worst: dict[str, float] = {}
_names = iter(range(10**9))


@pytest.mark.parametrize("name", KINDS)
def test_no_generated_document_makes_an_index_above_its_bound(home, tmp_path_factory, name):
    @settings(max_examples=50, **SETTINGS)
    @given(KINDS[name])
    def check(text):
        folder = tmp_path_factory.mktemp("lib")
        (folder / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        size = (folder / name).stat().st_size
        lib = f"p{next(_names)}"
        try:
            library_build.add(lib, [folder], progress=False)
        except src.KitError as e:  # nothing to search in it (only markup, or only controls)
            assert "would hold no text" in str(e)
            return
        index = library.Library(lib).size_bytes()
        library.remove(lib)
        ratio = index / max(size, 1)
        target(ratio, label=f"index / size of {name}")
        if size >= 4096:  # the fixed files dwarf a tiny document: its ratio says nothing
            _worst[name] = max(_worst.get(name, 0.0), ratio)
        assert index <= INDEX_RATIO * size + INDEX_FIXED, (index, size)

    check()
    print(f"worst index / size of a generated {name} of 4 KB or more: {_worst.get(name, 0):.2f}")


@settings(max_examples=6, **SETTINGS)
@given(
    st.lists(st.text(max_size=300), min_size=1, max_size=5),
    st.dictionaries(
        st.integers(0x80, 0xFF), st.sampled_from(["\u2028", "\x85", "\u2029", "\x1b", "\u202e", "x"])
    ),
)
def test_the_pdf_reader_is_bounded_on_generated_text(tmp_path_factory, paragraphs, to_unicode):
    path = tmp_path_factory.mktemp("pdf") / "doc.pdf"
    path.write_bytes(minimal_pdf(paragraphs, "T", to_unicode=to_unicode or None))
    read_bounded(path)


@settings(max_examples=4, **SETTINGS)
@given(st.lists(html_page(), min_size=1, max_size=3), st.booleans())
def test_zim_articles_are_bounded_and_searchable(home, tmp_path_factory, pages, fulltext):
    folder = tmp_path_factory.mktemp("zim")
    # hostile pages beside a plain one: they must cost nothing to finding it
    articles = {f"A/P{i}": (f"Page {i}", page) for i, page in enumerate(pages)}
    articles["A/Harbour"] = ("Harbour", "<p>The harbour lantern is lit at dusk.</p>")
    write_zim(folder / "w.zim", articles, fulltext=fulltext)
    report = library_build.add("z", [folder], progress=False)
    assert report.skipped == []
    t = time.perf_counter()
    hits = library.open_library("z").search("harbour lantern", 3)
    assert time.perf_counter() - t < library.SEARCH_BUDGET_S + 1
    assert hits and all(
        len(h.text) <= src.MAX_PASSAGE_CHARS and not CONTROLS & set(h.title + h.text) for h in hits
    )
    library.remove("z")

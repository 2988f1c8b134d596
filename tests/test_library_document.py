"""A library's document (research.library.document): decoding, titles and passages against
hand-written expectations, each passage's length counted beside it.
"""

import codecs
import time

import pytest

from research.library import document as d


@pytest.mark.parametrize(
    "name, kind",
    [
        ("a/Report.PDF", "pdf"), ("x.txt", "text"), ("x.text", "text"), ("x.md", "markdown"),
        ("x.markdown", "markdown"), ("x.HTML", "html"), ("x.htm", "html"), ("x.xhtml", "html"),
        ("wiki.zim", "zim"), ("x.docx", None), ("README", None), ("x.md.bak", None),
    ],
)  # fmt: skip
def test_kind_of(name, kind):
    from pathlib import Path

    assert d.kind_of(Path(name)) == kind


def test_check_deadline():
    d.check_deadline(None)
    d.check_deadline(time.monotonic() + 60)
    with pytest.raises(d.SourceError) as e:
        d.check_deadline(time.monotonic() - 1)
    assert str(e.value) == "took too long to read and was stopped (it may be built to make readers slow)"


@pytest.mark.parametrize(
    "text, limit, capped",
    [
        ("A  very\nlong title", 12, "A very long…"),
        ("short", 12, "short"),
        ("exactly12chr", 12, "exactly12chr"),
        ("abcdefghijklmnop", 12, "abcdefghijk…"),  # no space: cut at the limit
        (
            "ab cdefghijklmnop",
            12,
            "ab cdefghij…",
        ),  # the only space too early (not past half): cut at the limit
        ("abcdefg hijklmnop", 12, "abcdefg…"),  # a space past half the limit: cut there
        ("abcdef ghijklmnop", 12, "abcdef ghij…"),  # a space at exactly half: too early
    ],
)
def test_cap_title(text, limit, capped):
    assert d.cap_title(text, limit) == capped
    assert len(capped) <= limit


def test_cap_title_default_is_100():
    assert d.cap_title("x" * 100) == "x" * 100 and d.cap_title("x" * 101) == "x" * 99 + "…"


@pytest.mark.parametrize(
    "data, text",
    [
        (codecs.BOM_UTF8 + "café".encode(), "café"),
        (codecs.BOM_UTF16_LE + "hi é".encode("utf-16-le"), "hi é"),
        (codecs.BOM_UTF16_BE + "hi é".encode("utf-16-be"), "hi é"),
        (codecs.BOM_UTF32_LE + "hi é".encode("utf-32-le"), "hi é"),  # starts like UTF-16 LE's BOM
        (codecs.BOM_UTF32_BE + "hi é".encode("utf-32-be"), "hi é"),
        ("café naïve".encode(), "café naïve"),
        (b"caf\xe9", "café"),  # not UTF-8: Windows-1252
        (b"\x93quoted\x94", "\u201cquoted\u201d"),
        (b"a\x1b[2Jb", "a[2Jb"),  # controls out
    ],
)
def test_decode(data, text):
    assert d.decode(data) == text


def test_decode_keeps_utf8_with_a_stray_byte():
    """One bad byte among 100 accented letters (200 bytes above 0x7F, 201 with it): 1 is under 1 %
    of 201, so it is UTF-8 with one U+FFFD; 3 bad of 203 are not, so Windows-1252. ASCII around
    them changes nothing: the share is of the bytes above 0x7F."""
    good = "é" * 100
    assert d.decode(good.encode() + b"\xff") == good + "\ufffd"
    assert d.decode(good.encode() + b"\xff\xff\xff") == good.encode().decode("cp1252") + "ÿÿÿ"
    prose = "x" * 1000 + "é" * 100
    assert d.decode(prose.encode() + b"\xff\xff\xff") == prose.encode().decode("cp1252") + "ÿÿÿ"
    assert d.UTF8_BAD_SHARE == 0.01


def test_binary_content_is_refused():
    with pytest.raises(d.SourceError) as e:
        d.decode(b"PK\x03\x04\x00\x00")
    assert str(e.value) == "binary content, not text"
    assert d.decode(b"x" * 8192 + b"\x00") == "x" * 8192  # only the first 8 KB are looked at


def test_paragraphs_and_blocks():
    assert d.paragraphs("a\nb\n\n c ") == ["a b", "c"]
    assert d.paragraphs("a\n \t \nb\n\n\n\nc") == ["a", "b", "c"]  # a blank line may hold blanks
    assert d.paragraphs("  \n\n ") == []
    assert d.text_to_blocks("a\n\nb") == [("", "a"), ("", "b")]
    with pytest.raises(d.SourceError):
        d.text_to_blocks("a", time.monotonic() - 1)


def test_pieces_of_a_long_paragraph():
    assert d._pieces("short one.", 20) == ["short one."]
    # Sentences apart, each within the limit: "One two." (8) and "Three four five." (16).
    assert d._pieces("One two. Three four five.", 20) == ["One two.", "Three four five."]
    # A sentence of 29 with no end inside: cut at the last space that fits in 12, past half.
    assert d._pieces("aaaa bbbbbbb cccc ddddd eeeee", 12) == ["aaaa bbbbbbb", "cccc ddddd", "eeeee"]
    # No space past half the limit: the word itself is cut at the limit.
    assert d._pieces("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert d._pieces("ab " + "y" * 20, 10) == ["ab yyyyyyy", "y" * 10, "yyy"]
    assert d._pieces("a.   " + "b" * 12, 10) == ["a.", "b" * 10, "bb"]


def test_passages_pack_paragraphs_within_a_section():
    doc = d.Document("T", [("A", "x" * 300), ("A", "y"), ("B", "z")])
    assert d.passages(doc) == [("A", "x" * 300 + " y"), ("B", "z")]
    # 300 + 1 + 300 > 600: the second paragraph starts a passage of its own.
    doc = d.Document("T", [("A", "x" * 300), ("A", "w" * 300)])
    assert d.passages(doc) == [("A", "x" * 300), ("A", "w" * 300)]
    doc = d.Document("T", [("A", "x" * 299), ("A", "w" * 300)])  # 299 + 1 + 300 = 600: fits
    assert d.passages(doc) == [("A", "x" * 299 + " " + "w" * 300)]
    assert d.passages(d.Document("T", [])) == []
    assert d.passages(d.Document("T", [(None, "x")])) == [("", "x")]


def test_a_short_passage_goes_on_into_the_next_section_with_its_heading():
    assert d.passages(d.Document("T", [("A", "x"), ("B", "z")])) == [("A", "x B: z")]
    # Three short sections in a row: each heading once; a section without a name adds none.
    doc = d.Document("T", [("A", "a"), ("B", "b"), ("B", "c"), ("", "d")])
    assert d.passages(doc) == [("A", "a B: b c d")]
    # 99 characters is short (under 600 / 6 = 100), 100 is not.
    assert d.passages(d.Document("T", [("A", "x" * 99), ("B", "z")])) == [("A", "x" * 99 + " B: z")]
    assert d.passages(d.Document("T", [("A", "x" * 100), ("B", "z")])) == [("A", "x" * 100), ("B", "z")]
    # Joined only while it fits: 50 + 1 + "B: " + 547 = 601 > 600.
    doc = d.Document("T", [("A", "x" * 50), ("B", "y" * 547)])
    assert d.passages(doc) == [("A", "x" * 50), ("B", "y" * 547)]
    doc = d.Document("T", [("A", "x" * 50), ("B", "y" * 546)])
    assert d.passages(doc) == [("A", "x" * 50 + " B: " + "y" * 546)]


def test_passages_with_another_size():
    doc = d.Document("T", [("A", "one two three four five six")])  # 27 characters
    assert d.passages(doc, max_chars=12) == [("A", "one two"), ("A", "three four"), ("A", "five six")]
    assert all(len(text) <= 12 for _, text in d.passages(doc, max_chars=12))


def test_the_bounds():
    assert (d.MAX_PASSAGE_CHARS, d.SHORT_SHARE, d.MAX_TITLE_CHARS, d.CHARS_PER_TOKEN) == (600, 1 / 6, 100, 3)
    assert (d.MAX_TEXT_MB, d.READ_TIMEOUT_S, d.MAX_PDF_MB, d.PDF_TIMEOUT_S) == (32, 60, 256, 60)
    assert (d.PDF_MEMORY_MB, d.MAX_DOC_CHARS) == (1024, 8_000_000)
    assert issubclass(d.SourceError, d.KitError)


def test_pieces_at_their_edges():
    # A sentence of exactly the limit is one piece, even with a space past half in it.
    assert d._pieces("abcdefg hij. xy", 12) == ["abcdefg hij.", "xy"]
    # A space at exactly half the limit is too early (and at a third, more so): cut at the limit.
    assert d._pieces("abcde fghijklmnop", 10) == ["abcde fghi", "jklmnop"]
    assert d._pieces("abcde fghijklmnop", 12) == ["abcde fghijk", "lmnop"]
    # Blanks after the last cut are not a piece.
    assert d._pieces("a" * 10 + " " * 5, 10) == ["a" * 10]


def test_cap_title_cuts_at_the_last_space_that_fits():
    assert d.cap_title("abcdefg hijklmnop qrs", 12) == "abcdefg…"
    assert d.cap_title("ab cdefgh ijklmnop", 12) == "ab cdefgh…"


def test_decode_at_the_one_percent_line_and_with_undefined_bytes():
    # 33 euro signs are 99 bytes above 0x7F, with the bad one 100: 1 bad is 1 %, not above it.
    assert d.decode("€".encode() * 33 + b"\xff") == "€" * 33 + "\ufffd"
    # Windows-1252 leaves 0x81 undefined: replaced, not an error.
    assert d.decode(b"caf\xe9 \x81") == "café \ufffd"
    # After a byte-order mark, bad bytes are replaced too.
    assert d.decode(codecs.BOM_UTF8 + b"ok \xff") == "ok \ufffd"
    assert d.decode(codecs.BOM_UTF16_LE + b"h\x00\x00\xd8") == "h\ufffd"


def test_passages_go_on_after_a_join_and_after_packing():
    doc = d.Document("T", [("A", "a"), ("B", "b"), ("C", "x" * 591), ("C", "y")])
    # "a B: b" (6) is short, but 6 + 1 + "C: " + 591 = 601: C starts anew and packs "y" after.
    assert d.passages(doc) == [("A", "a B: b"), ("C", "x" * 591 + " y")]
    # A paragraph of two sentence pieces: the first joins the short passage, the second follows.
    b, c = "b" * 300 + ".", "c" * 300 + "."
    assert d.passages(d.Document("T", [("A", "a"), ("B", f"{b} {c}")])) == [("A", f"a B: {b}"), ("B", c)]
    # A passage of no section, flushed when the next section starts: its title is "".
    assert d.passages(d.Document("T", [(None, "x" * 300), ("B", "y" * 400)])) == [
        ("", "x" * 300),
        ("B", "y" * 400),
    ]


def test_the_pieces_of_one_paragraph_are_packed_together():
    text = f"{'x' * 300}. {'y' * 100}. {'z' * 50}."  # pieces of 301, 101 and 51: 455 with spaces
    assert d.passages(d.Document("T", [("A", text)])) == [("A", text)]

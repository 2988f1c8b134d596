"""Markdown and HTML reduced to their words (research.library.markup): each page and its expected
(title, blocks) written out by hand.
"""

import time

import pytest
from markdown_it import MarkdownIt

from research.library import markup as m
from research.library.document import SourceError


@pytest.mark.parametrize(
    "line, found",
    [
        ("## Costs ##", (2, "Costs")), ("# T", (1, "T")), ("   ### Three", (3, "Three")),
        ("    # four spaces", None),
        ("#hashtag", None), ("####### seven", None), ("###### six", (6, "six")), ("#", (1, "")),
        ("#\tTab", (1, "Tab")), ("## C# ##", (2, "C#")), ("## a#", (2, "a#")), ("## ##", (2, "")),
        ("# x ###  ", (1, "x")), ("text", None),
        ("#X", None), ("\t# tab-indented", None), ("X# y", None), ("# Xylophone X", (1, "Xylophone X")),
        ("# Xylophone X #", (1, "Xylophone X")), ("# TeX#", (1, "TeX#")),
        # CommonMark strips spaces and tabs only: a no-break space is the heading's own
        ("# a\u00a0 #", (1, "a\u00a0")), ("# a #\u00a0", (1, "a #\u00a0")),
    ],
)  # fmt: skip
def test_heading(line, found):
    assert m.heading(line) == found
    if "\u00a0" not in line:  # markdown-it-py strips every kind of white space around a heading
        tokens = MarkdownIt("commonmark").parse(line)
        parsed = (int(tokens[0].tag[1]), tokens[1].content) if tokens[0].type == "heading_open" else None
        assert parsed == found


def test_unescape():
    assert m.unescape("a &amp; b &#233; &#xE9; &eacute") == "a & b é é é"
    assert m.unescape("no entity") == "no entity"
    # At most 8 digits are read (one scan whatever follows): an out-of-range code point is U+FFFD.
    assert m.unescape("&#" + "9" * 20) == "\ufffd" + "9" * 12


def test_markdown_to_blocks():
    text = (
        "# Title *one*\n\nSee ![x](http://h/i.png) [y](z) and <b>bold</b> **strong** _em_ 2*3*4.\n"
        "next line\n\n## Part [two](u)\n\n```\n# not a heading\n```\n\n~~~\n``` still code\n~~~\n"
        "<script>var hidden = 1;</script>after <!-- gone --> here\n<style>x</style >\n\n### &amp; more"
    )
    assert m.markdown_to_blocks(text) == (
        "Title one",
        [
            ("Title one", "See x y and bold strong em 2*3*4. next line"),
            ("Part two", "# not a heading"),
            ("Part two", "``` still code after here"),  # a fence's end does not end the paragraph
        ],
    )
    assert m.markdown_to_blocks("no heading\n\n## Later") == ("Later", [("", "no heading")])
    assert m.markdown_to_blocks("<!-- unclosed\n# gone") == ("", [])
    assert m.markdown_to_blocks("<svg><text>x</text>\n# gone too") == ("", [])
    with pytest.raises(SourceError):
        m.markdown_to_blocks("x", time.monotonic() - 1)


@pytest.mark.parametrize(
    "text, expected",
    [
        # a fence with an info string, indented by up to three spaces; a tab indents code, no fence
        ("```python\n# comment\n```\n\n# Real", ("Real", [("", "# comment")])),
        ("  ```\n# code\n  ```", ("", [("", "# code")])),
        ("\t```\n# Heading", ("Heading", [("", "```")])),
        ("   ```\n# code\n   ```", ("", [("", "# code")])),
        # four spaces indent code: such a line neither opens a fence nor closes one
        ("    ```\n# H", ("H", [("", "```")])),
        ("```\n# in code\n    ```\n# still code\n```", ("", [("", "# in code ``` # still code")])),
        ("X```\n# H", ("H", [("", "X```")])),
        ("```\n[a](b) *x* &amp;\n```", ("", [("", "[a](b) *x* &amp;")])),  # code is kept as written
        ("# a #\u00a0\n\nx", ("a #", [("a #", "x")])),  # no closing sequence before a no-break space
        ("a <!-- one --> b <!-- two --> c", ("", [("", "a b c")])),
        ("a<!-- c -->b", ("", [("", "a b")])),
        # an end mark before the opening one ends nothing (a wrong one would loop: the deadline says)
        ("x --> y <!-- z --> w", ("", [("", "x --> y w")])),
        ("</script> x <script>y</script> z", ("", [("", "x z")])),
    ],
)
def test_markdown_fences_comments_and_raw_blocks(text, expected):
    assert m.markdown_to_blocks(text, time.monotonic() + 2) == expected


def test_end_tags_of_raw_blocks_are_found_in_any_case(monkeypatch):
    monkeypatch.setattr(m, "_CLOSERS", {})  # compiled afresh, not found in the cache of other tests
    text = "a <script>x</SCRIPT >b\n<Style>y</style/>c <script>q</scripts>r</script>s"
    assert m.markdown_to_blocks(text) == ("", [("", "a b c s")])
    assert m.html_to_blocks("<p>a</p><SCRIPT>x</Script >b<title>T</TITLE>") == ("T", [("", "a"), ("", "b")])


def test_the_deadline_is_checked_before_the_lines_and_every_1024_lines(monkeypatch):
    with pytest.raises(SourceError):  # the raw blocks' pass stops at the deadline on its own
        m._drop_raw("<!-- x -->", time.monotonic() - 1)
    seen = []
    monkeypatch.setattr(m, "check_deadline", seen.append)
    m.markdown_to_blocks("x\n" * 2048, 60.0)  # 2049 lines: raw blocks once, then lines 0, 1024, 2048
    assert seen == [60.0] * 4


@pytest.mark.parametrize("tags, checks", [(1, 0), (4095, 0), (4096, 1), (4097, 1), (8192, 2)])
def test_html_checks_the_deadline_every_4096_tags(monkeypatch, tags, checks):
    seen = []
    monkeypatch.setattr(m, "check_deadline", seen.append)
    m.html_to_blocks("<b>" * tags, 60.0)
    assert seen == [60.0] * checks


def test_markdown_links_and_titles():
    assert m._md_inline("[a](<u v> \"t\") [b](u(1)) ![c](u 't')") == "a b c"
    assert m._md_inline("[keep] (not a link)") == "[keep] (not a link)"
    assert m._md_inline("****") == "****"


def test_html_to_blocks():
    page = (
        "<!DOCTYPE html><html><head><title>The &amp; Title</title><style>p{}</style></head><body>"
        "<h1>Intro</h1><p>First <b>bold</b> &lt;x&gt;</p><div>Second<br/>line</div>"
        "<script>var s = '</p>';</script><!-- a comment --><template><p>hidden</p></template>"
        "<h2>Sub <i>part</i></h2><ul><li>one</li><li>two</li></ul><textarea>typed &amp; kept</textarea>"
        "<svg><p>drawn</p></svg><p>after</p><?xml stray?></body></html>"
    )
    assert m.html_to_blocks(page) == (
        "The & Title",
        [
            ("Intro", "First bold <x>"),
            ("Intro", "Second"),
            ("Intro", "line"),
            ("Sub part", "one"),
            ("Sub part", "two"),
            ("Sub part", "typed & kept"),
            ("Sub part", "after"),
        ],
    )
    assert m.html_to_blocks("<h3>Only</h3><p>x</p>") == (
        "Only",
        [("Only", "x")],
    )  # no title: the first section
    assert m.html_to_blocks("<p>a <b unclosed") == ("", [("", "a")])  # an unclosed tag runs to the end
    assert m.html_to_blocks("<p>a</p><!-- open") == ("", [("", "a")])
    assert m.html_to_blocks("<head><p>in head</p><body><p>body</p>") == ("", [("", "body")])
    assert m.html_to_blocks("<script>never closed <p>x</p>") == ("", [])
    assert m.html_to_blocks("<svg/><p>shown</p>") == ("", [("", "shown")])  # a closed <svg/> skips nothing
    assert m.html_to_blocks("</svg></svg><p>still</p>") == ("", [("", "still")])
    assert m.html_to_blocks("<h1>A</h1>x</h2>y<h2>B</h2>") == ("A", [("A", "x y")])
    with pytest.raises(SourceError):
        m.html_to_blocks("<p>x</p>" * 5000, time.monotonic() - 1)


@pytest.mark.parametrize(
    "page, expected",
    [
        ("<h1>A <b>B</b> C</h1><p>x</p>", ("A B C", [("A B C", "x")])),  # a heading ends at its own end tag
        ("<svg><svg></svg>hidden</svg><p>shown</p>", ("", [("", "shown")])),  # skipped elements nest
        ("<p>a</p>tail", ("", [("", "a"), ("", "tail")])),
        ("<svg width=1><p>drawn</p></svg><script type=x>var s;</script><p>after</p>", ("", [("", "after")])),
        # an end tag before the opening one ends nothing (a wrong one would loop: the deadline says)
        ("</script><p>a</p><script>x</script><p>b</p>", ("", [("", "a"), ("", "b")])),
    ],
)
def test_html_nesting_attributes_and_trailing_text(page, expected):
    assert m.html_to_blocks(page, time.monotonic() + 2) == expected


def test_comments_holding_a_tag_end_and_long_tags():
    """A comment ends at `-->`, not at the first `>` inside it; a tag of up to 400 characters in
    Markdown goes whole (an anchor's long href is no word of the page)."""
    assert m.html_to_blocks("<p><!-- a > b -->text</p>") == ("", [("", "text")])
    assert m.markdown_to_blocks("keep <!-- a > b --> this") == ("", [("", "keep this")])
    href = "https://example.org/" + "a" * 100
    assert m.markdown_to_blocks(f'<a href="{href}">words</a> only') == ("", [("", "words only")])
    assert m.markdown_to_blocks("__strong__ and _em_ here") == ("", [("", "strong and em here")])

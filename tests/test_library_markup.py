"""Markdown and HTML reduced to their words (research.library.markup): each page and its expected
(title, blocks) written out by hand.
"""

import time

import pytest

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
    ],
)  # fmt: skip
def test_heading(line, found):
    assert m.heading(line) == found


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

"""Hostile text stays text: page_text judged by fixed expected output and by two Markdown parsers
that are not the kit's (markdown-it-py with HTML on, mistune), never by page_text's own helpers.

The browser, with Gradio's own renderer, is the third judge (tests/test_hostile_page.py).
"""

import html.parser
import re

import mistune
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from research.page import text as page_text

#: What a renderer may make of shown() text: formatting and the kit's code element. Anything else
#: (a, img, iframe, svg, video, link, style, script, form, meta, base, object...) is a tag that came
#: from the text: the defect these tests look for. A link too: one in an answer is unchecked, and a
#: click would leave the device or reach another program's server on it.
ALLOWED_TAGS = {
    "p", "pre", "code", "em", "strong", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li",
    "blockquote", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "sub", "del", "s",
}  # fmt: skip
EVIL = "evil.example"

#: The six shapes that became an <img> in Chromium with the kit's old code-span detection, and
#: the classes of trick they stand for.
BYPASSES = {
    "backslash before a backtick": f"\\`<img src=http://{EVIL}/a.png>`",
    "code span broken by a # line": f"`a\n# b <img src=http://{EVIL}/b.png> `",
    "code span broken by a - line": f"`a\n- <img src=http://{EVIL}/c.png>`",
    "code span broken by a > line": f"`a\n> <img src=http://{EVIL}/d.png>`",
    "code span broken by a <div> line": f"`a\n<div>\n<img src=http://{EVIL}/e.png>`",
    "fence whose info string holds a backtick": f"``` a`b\n<img src=http://{EVIL}/f.png>\n```",
    "two-backtick fence": f"``\n<img src=http://{EVIL}/g.png>\n``",
    "fence closed by fewer backticks": f"````\nx\n```\n<img src=http://{EVIL}/h.png>",
    "tilde fence with backticks": f"~~~\n`\n~~~\n<img src=http://{EVIL}/i.png>`",
    "indented code after a paragraph": f"para\n    <img src=http://{EVIL}/j.png>",
    "unclosed span at a blank line": f"`a\n\n<img src=http://{EVIL}/k.png>`",
    "code in a list item": f"- ```\n  <img src=http://{EVIL}/l.png>\n- ```",
    "code in a block quote, then out": f"> ```\n> x\n<img src=http://{EVIL}/m.png>",
    "html comment around a fence": f"<!--\n```\n-->\n<img src=http://{EVIL}/n.png>\n```",
    "reference image": f"![x][r]\n\n[r]: http://{EVIL}/o.png",
    "entity-spelled tag": f"&lt;img src=http://{EVIL}/p.png&gt; &#60;img src=x&#62;",
    "autolink": f"<http://{EVIL}/q.png>",
    "nested image in a link": f"[![a](http://{EVIL}/r.png)](http://x)",
    "image in a table": f"| a |\n|---|\n| ![t](http://{EVIL}/s.png) |",
    "setext heading over a tag": f"<img src=http://{EVIL}/t.png>\n===",
    "a link": "[click](http://127.0.0.1:9999/steal)",
    "a reference link": f"[click][r]\n\n[r]: http://{EVIL}/u",
    "a bare address": f"see http://{EVIL}/v or HTTPS://{EVIL}/w",
    "a bare www address": f"see www.{EVIL} or WWW.{EVIL}/x",
    "an e-mail address": f"write to someone@{EVIL} or mailto:someone@{EVIL}",
    # An HTML block holds the ~~~ line; once "<" is an entity its first line is a paragraph, and a
    # fence may interrupt a paragraph: the renderer would open one where the kit saw none.
    "tilde fence under an html block's first line": f"a\n<div>\n~~~\n<img src=http://{EVIL}/y.png>",
}


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def rendered_tags(markdown: str) -> list[tuple[str, dict]]:
    """The elements two Markdown parsers (HTML passed through, tables and strikethrough on) make."""
    out = []
    renderers = (
        MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render,
        mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "url"]),
    )
    for render in renderers:
        parser = Tags()
        parser.feed(render(markdown))
        out += parser.tags
    return out


def assert_inert(text: str) -> None:
    shown = page_text.shown(text)
    tags = rendered_tags(shown)
    bad = [t for t, _ in tags if t not in ALLOWED_TAGS]
    assert bad == [], (text, shown, bad)
    for tag, attrs in tags:
        assert "src" not in attrs and "srcset" not in attrs and "style" not in attrs, (text, tag, attrs)
    # No code block but the kit's own element, read as CommonMark does and as marked (Gradio's
    # renderer) does, which takes a lone carriage return for a line break.
    for as_read in (shown, re.sub(r"\r\n?", "\n", shown)):
        blocks = [t.type for t in MarkdownIt("commonmark", {"html": True}).parse(as_read)]
        assert "fence" not in blocks and "code_block" not in blocks, (text, shown, as_read)


@pytest.mark.parametrize("name", list(BYPASSES))
def test_the_known_bypasses_render_no_element(name):
    assert_inert(BYPASSES[name])
    assert page_text.plain(page_text.shown(BYPASSES[name])) == BYPASSES[name]


def test_fixed_outputs():
    """What shown() writes, spelled out: entities outside code, the kit's element around code."""
    assert page_text.shown("<img src=x> & ![a](b)") == "&lt;img src=x> &amp; &#33;\\[a](b)"
    assert page_text.shown("[a](http://e.x) www.e.x a@b.c 3.5: x") == (
        "\\[a](http&#58;//e.x) www&#46;e.x a&#64;b.c 3.5: x"
    )  # no link of any kind; other dots and colons as they were
    assert page_text.shown("a `b` \\c") == "a \\`b\\` \\\\c"
    fenced = "a\n<pre><code>```py\nx&lt;y &#33;\n```</code></pre>\nb"
    assert page_text.shown("a\n```py\nx<y !\n```\nb") == fenced
    assert page_text.shown("a\n\n    i<j\n") == "a\n\n<pre><code>    i&lt;j</code></pre>\n"
    assert (
        page_text.shown("```\na > b && !c\n```")
        == "<pre><code>```\na &gt; b &amp;&amp; &#33;c\n```</code></pre>"
    )
    assert page_text.shown("WWW.e.x wWw.e.x ww.e.x") == "WWW&#46;e.x wWw&#46;e.x ww.e.x"  # any case
    assert page_text.shown("a\r> ~~~\r<b>") == "a&#13;> \\~\\~\\~&#13;&lt;b>"  # marked breaks lines at \\r
    assert page_text.shown("<div>\n~~~ ~a~") == "&lt;div>\n\\~\\~\\~ \\~a\\~"  # no fence, no strikethrough
    assert page_text.shown("¡Hola! 2 > 1") == "¡Hola! 2 > 1"  # nothing to escape: unchanged
    assert page_text.literal("a<b> `c`") == "<code>a&#60;b&#62; &#96;c&#96;</code>"
    assert page_text.literal("| a | ~b~ #c $d$ ^e^ {f} *g* _h_ [i]") == (
        "<code>&#124; a &#124; &#126;b&#126; &#35;c &#36;d&#36; &#94;e&#94; &#123;f&#125; &#42;g&#42; "
        "&#95;h&#95; &#91;i&#93;</code>"
    )  # table cells, strikethrough, headings, math, emphasis, links: all entities
    assert (
        page_text.literal("other-model.Q4_0 (1).gguf") == "<code>other-model&#46;Q4&#95;0 (1)&#46;gguf</code>"
    )
    assert page_text.literal("see http://e.x/a or www.e.x") == (
        "<code>see http&#58;&#47;&#47;e&#46;x&#47;a or www&#46;e&#46;x</code>"
    )  # no autolink: a bare address stays text


def test_figures_are_shown_to_the_eye_and_said_as_sentences():
    """A screen reader reads the figures under an answer as sentences, the eye sees the short line."""
    line = (
        "likely right, 82 % · model loaded in 1.2 s · 9 prompt tokens · first token 0.12 s · "
        "prompt 300 t/s · 12 tokens at 45.0 t/s · peak 230 MB · CPU 0.50 s · cancelled"
    )
    assert page_text.spoken("◷ " + line) == (
        "Likely right, 82 percent. Model loaded in 1.2 seconds. 9 prompt tokens. First token 0.12 "
        "seconds. Prompt 300 tokens a second. 12 tokens at 45.0 tokens a second. Peak 230 megabytes. "
        "CPU 0.50 seconds. Cancelled."
    )
    assert page_text.spoken(" · library notes: 3 passages · +120 prompt tokens · retrieval 12 ms") == (
        "Library notes: 3 passages. 120 more prompt tokens. Retrieval 12 milliseconds."
    )
    figures = page_text.figures(line)
    assert page_text.strip_figures("Paris." + figures) == "Paris."
    spans = [a.get("class") for t, a in rendered_tags(figures) if t == "span"]
    assert spans == [page_text.VISUAL, "sr-only"] * 2  # both renderers: the line seen, the sentences read


def test_figures_from_a_file_stay_text_when_said():
    """A model's warning (from its file) is in the figures: neither form of it becomes HTML."""
    line = f'9 tokens · ⚠ the template failed: <img src="http://{EVIL}/w.png"> ![w](http://{EVIL}/x.png)'
    figures = page_text.figures(line)
    assert {t for t, _ in rendered_tags(figures)} <= {"p", "sub", "span", "a"}
    assert "Warning: the template failed: &lt;img" in figures and "<img" not in figures
    assert page_text.strip_figures("Paris." + figures) == "Paris."


def test_the_figures_line_is_the_kits_and_comes_off_again():
    """The line of figures under an answer: hostile parts (a model's name) still text; strip_figures
    takes off exactly that line and only at the end."""
    assert page_text.figures("3 tokens <img src=x>") == (
        '\n\n<sub><span class="kit-visual">◷ 3 tokens &lt;img src=x></span>'
        '<span class="sr-only">3 tokens &lt;img src=x>.</span></sub>'
    )  # the line seen, then the sentence read (a screen reader)
    assert page_text.strip_figures("Paris.\n\n<sub>◷ 3 prompt tokens · 1.2 s</sub>") == "Paris."
    assert page_text.strip_figures("Paris.\n\n<sub>◷ 3 tokens</sub>\n") == "Paris."
    kept = "Paris.\n\n<sub>◷ 3 tokens</sub>\n\nand more"  # not the last line: the answer's own text
    assert page_text.strip_figures(kept) == kept
    assert page_text.strip_figures("Paris.") == "Paris."


def test_code_blocks_are_what_commonmark_says():
    assert page_text.code_blocks("a\n```\nx\n```\nb") == [(1, 4)]
    assert page_text.code_blocks("``` a`b\nx\n```") == [(2, 3)]  # no fence: a backtick in its info
    assert page_text.code_blocks("para\n    not code") == []  # indented lines continue a paragraph
    assert page_text.code_blocks("x\r\n```\r\ny\r\n```") == [(1, 4)]


#: Pieces hostile text is made of: backticks and fences, the lines that break a paragraph,
#: tags, images, references, entities, backslashes, containers.
PIECES = [
    "`", "``", "```", "~~~", "\\", "\n", "\n\n", " ", "    ", "# ", "- ", "> ", "1. ", "<div>",
    "</div>", f"<img src=http://{EVIL}/x.png>", f"![a](http://{EVIL}/y.png)", f"[r]: http://{EVIL}/z.png",
    "![a][r]", "a", "b", "*", "_", "&", "&lt;", "&#60;", "<", ">", "!", "[", "]", "(", ")", "|", "---",
    "===", "<!--", "-->", "<pre>", "</pre>", "<code>", "</code>", "<pre><code>", "</code></pre>", "\r",
    "<sub>", "◷", "http://", "https://", "www.", "@", "mailto:", f"{EVIL}", ":", ".", "[x]: ",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_generated_hostile_text_renders_no_element_and_comes_back(text):
    assert_inert(text)
    assert page_text.plain(page_text.shown(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map(" ".join))
def test_a_literal_value_renders_no_element(value):
    """A file name or a model's metadata, as the status line shows it."""
    tags = rendered_tags(f"**Model:** {page_text.literal(value)} · context 2048")
    assert {t for t, _ in tags} <= ALLOWED_TAGS and all("src" not in a for _, a in tags), value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_comes_back_exactly(text):
    assert page_text.plain(page_text.shown(text)) == text

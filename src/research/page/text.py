"""Text on the page is shown as text: questions, answers, file names and model metadata are hostile.

The page renders Markdown, and Gradio's Markdown renderer passes HTML through (after a sanitizer
that keeps `<img>`): a question, a model's answer or a pasted document holding `<img src=...>` or
`![](http://...)` would make the browser fetch another host, carrying the conversation off the
device. The Content-Security-Policy (research.page.server) stops fetches to other hosts; this module
makes sure the text is not HTML in the first place, whatever the renderer's parser makes of it.

The rule that keeps it safe does not depend on agreeing with that parser: in the Markdown
shown(), no `<` and no `![` written by anyone but the kit is left as it was.

- Outside code, `&` and `<` become entities and `![` becomes `&#33;\\[`; backslashes, backticks,
  tildes and `[` are escaped too (`\\\\`, `` \\` ``, `\\~`, `\\[`), so no code span or fence can
  open in the renderer where the kit saw none (a `~~~` line under an HTML block's first line, say:
  once its `<` is an entity that line is a paragraph, which a fence may interrupt), and no link
  either: neither `[a](url)` nor a bare address (`://`, `www.` and `@` have an entity), since a
  link in an answer is unchecked and a click would leave the device, or reach another program's
  server on it. A carriage return is an entity as well: Gradio's renderer (marked) reads a lone
  one as a line break, CommonMark does not, and a fence could open on the line only one of them
  sees.
- Code blocks (fenced or indented) are found by a CommonMark parser (markdown-it-py), never by
  patterns of our own: the kit's own detection differed from the renderer's (a backslash before a
  backtick, a paragraph broken by a `#`, `-`, `>` or `<div>` line inside a code span, a fence
  whose info string holds a backtick), and each difference was an `<img>` in Chromium. Each block
  becomes the kit's own `<pre><code>` element holding its source lines, fences included, with
  `&`, `<`, `>` and `!` as entities: shown exactly in the renderer, and still inert if a renderer
  ever read it as Markdown.
- Inline code stays text with its backticks shown; LaTeX is off on the page (demo/app.py).

Where the renderer and CommonMark disagree, the worst that happens is an escape shown literally.
`plain()` undoes exactly what `shown()` did, so what the page sends back is the text as typed.

`shown("<img src=x> & ![a](b)")` -> `"&lt;img src=x> &amp; &#33;\\[a](b)"`.
"""

from __future__ import annotations

import functools
import re

#: The class of the kit's own text that is shown and not read out: a screen reader reads the same
#: figures as sentences beside it (said). Gradio's sanitizer keeps classes and drops aria-hidden,
#: which the page's script (research.page.look) sets again on this class.
VISUAL = "kit-visual"
FIGURES = re.compile(rf"\n\n<sub>(?:<span class=\"{VISUAL}\">)?◷ [^\n]*</sub>\s*$")
#: The kit's own code element: what shown() writes around a code block, and plain() reads back.
PRE, END = "<pre><code>", "</code></pre>"
#: Outside code: (text, as shown), one character (or `![`) at a time, undone in reverse. No link
#: either: `[` is escaped (no `[a](url)`, no reference link) and what makes a bare address a link
#: in GFM (`http:`+`//`, `www.`, `a@b`) is broken by an entity: a link in an answer is the
#: model's or a document's, unchecked, and a click would leave the device or reach another
#: program's server on it.
_TEXT = {
    "\\": "\\\\",
    "`": "\\`",
    "~": "\\~",
    "&": "&amp;",
    "<": "&lt;",
    "![": "&#33;\\[",
    "[": "\\[",
    ":": "&#58;",
    ".": "&#46;",
    "@": "&#64;",
    "\r": "&#13;",
}
_TEXT_IN = re.compile(r"!\[|:(?=//)|(?<=[wW]{3})\.|[\\`~&<\[@\r]")
_TEXT_OUT = re.compile(r"\\\\|\\`|\\~|&amp;|&lt;|&#33;\\\[|\\\[|&#58;|&#46;|&#64;|&#13;")
_UNTEXT = {v: k for k, v in _TEXT.items()}
#: Inside the kit's code element.
_CODE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "!": "&#33;"}
_CODE_OUT = re.compile(r"&amp;|&lt;|&gt;|&#33;")
_UNCODE = {v: k for k, v in _CODE.items()}
_BLOCK = re.compile(re.escape(PRE) + r"(.*?)" + re.escape(END) + r"(\n?)", re.S)


@functools.cache
def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def code_blocks(text: str) -> list[tuple[int, int]]:
    """The code blocks of Markdown text as CommonMark sees them: [start, end) ranges of its lines
    (split at "\\n" only; a lone carriage return is not a line break here, as in _lines).

    `code_blocks("a\\n```\\nx\\n```\\nb")` -> [(1, 4)].
    """
    tokens = _parser().parse(text.replace("\r", "\x00"))  # markdown-it would break lines at "\r"
    return [tuple(t.map) for t in tokens if t.type in ("fence", "code_block") and t.map]


def _lines(text: str) -> list[str]:
    """`_lines("a\\nb\\r\\n")` -> ["a\\n", "b\\r\\n"]: each line with its "\\n"."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _text(piece: str) -> str:
    return _TEXT_IN.sub(lambda m: _TEXT[m.group()], piece)


def _code(piece: str) -> str:
    return "".join(_CODE.get(c, c) for c in piece)


def shown(text: str) -> str:
    """Text as the page shows it: never HTML, never an image fetched from anywhere."""
    lines = _lines(text)
    out, pos = [], 0
    for start, end in code_blocks(text):
        if start < pos:  # nested inside a block already taken
            continue
        out.append(_text("".join(lines[pos:start])))
        block = "".join(lines[start:end])
        newline = "\n" if block.endswith("\n") else ""
        out.append(f"{PRE}{_code(block[: len(block) - len(newline)])}{END}{newline}")
        pos = end
    out.append(_text("".join(lines[pos:])))
    return "".join(out)


def plain(text: str) -> str:
    """Undo shown(): `plain(shown(t)) == t` for every text t."""
    out, pos = [], 0
    for m in _BLOCK.finditer(text):
        out.append(_TEXT_OUT.sub(lambda x: _UNTEXT[x.group()], text[pos : m.start()]))
        out.append(_CODE_OUT.sub(lambda x: _UNCODE[x.group()], m.group(1)) + m.group(2))
        pos = m.end()
    out.append(_TEXT_OUT.sub(lambda x: _UNTEXT[x.group()], text[pos:]))
    return "".join(out)


def figures(line: str) -> str:
    """The line of figures under an answer (the kit's own text, small): shown as it is, read by a
    screen reader as sentences (said)."""
    return f"\n\n<sub>{said('◷ ' + line)}</sub>"


def strip_figures(text: str) -> str:
    """`"Paris.\\n\\n<sub>◷ 3 prompt tokens …</sub>"` -> `"Paris."`."""
    return FIGURES.sub("", text)


#: How a line of figures is said rather than shown: its units and marks as words (spoken()).
_SAID = [
    (re.compile(r"^◷ *"), ""),
    (re.compile(r"⚠ *"), "warning: "),
    (re.compile(r"(\d) %"), r"\1 percent"),
    (re.compile(r"(\d) t/s\b"), r"\1 tokens a second"),
    (re.compile(r"(\d) ms\b"), r"\1 milliseconds"),
    (re.compile(r"(\d) s\b"), r"\1 seconds"),
    (re.compile(r"(\d) MB\b"), r"\1 megabytes"),  # the kit's MB (research.units), as people say it
    (re.compile(r"(\d) J\b"), r"\1 joules"),
    (re.compile(r"^\+(\d+)"), r"\1 more"),
]


def spoken(line: str) -> str:
    """A line of figures as a screen reader should say it: sentences, not a run of symbols.

    `spoken("◷ likely right, 82 % · first token 0.12 s · 9 tokens at 45.0 t/s")` ->
    "Likely right, 82 percent. First token 0.12 seconds. 9 tokens at 45.0 tokens a second."
    """
    sentences = []
    for part in line.split(" · "):
        for pattern, words in _SAID:
            part = pattern.sub(words, part.strip())
        if part:
            sentences.append(part[0].upper() + part[1:] + ("" if part.endswith((".", "?", "!")) else "."))
    return " ".join(sentences)


def said(line: str) -> str:
    """A line of the kit's own figures for the page: shown as it is to the eye and hidden from a
    screen reader, which reads spoken() instead (text, both: shown())."""
    return f'<span class="{VISUAL}">{shown(line)}</span><span class="sr-only">{shown(spoken(line))}</span>'


#: What literal() writes as entities: every character that can open HTML, an entity, an escape,
#: emphasis, code, a link or image, a table cell, a heading or math in a line of Markdown, and those
#: that make a bare address a link (GFM's autolinks: "http:", "www.", "a@b").
_MARKUP = frozenset("&<>\\`*_[]!~|#$^{}:/@.")


def literal(value) -> str:
    """A value from a file or a user (a file name, a model's metadata) for one line of Markdown:
    the kit's own `<code>` element with every character that could be markup as an entity, which
    a Markdown renderer passes through and a browser shows exactly (no HTML, no links, no escapes,
    whatever the renderer parses around it).

    `literal("a<b>-c")` -> "<code>a&#60;b&#62;-c</code>".
    """
    text = " ".join(str(value).split())
    return "<code>" + "".join(f"&#{ord(c)};" if c in _MARKUP else c for c in text) + "</code>"

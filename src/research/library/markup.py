"""Markdown and HTML reduced to their words, in time linear in their size.

HTML is reduced by a tokenizer of this module (scripts, styles and tags dropped, never kept as
HTML); Python's html.parser is not used, since it is quadratic on some input (CVE-2025-6069).
Markdown loses its images, links and raw tags, line by line, through string operations and regular
expressions built so that no character is scanned more than a few times (a heading regex that
backtracked took 15 minutes on one 10 KB heading line).
"""

from __future__ import annotations

import html
import re

from research.library.document import cap_title, check_deadline

# ---- Markdown ----

#: Raw HTML blocks in Markdown whose content is not text; HTML comments go too.
_MD_RAW = re.compile(r"<(script|style|template|iframe|object|svg|textarea|noscript)(?=[\s/>])|<!--", re.I)
#: An image or a link, `![text](url "title")` or `[text](url)`: each part's characters exclude
#: the delimiters around it, so a failed match never scans what another attempt scans again.
_MD_LINK = re.compile(
    r"!?\[([^\[\]\n]*)\]\(\s*"
    r"(?:(?:<[^<>\n]*>|[^()\[\]\s]+(?:\([^()\[\]\s]*\)[^()\[\]\s]*)*)\s*)?"
    r"(?:\"[^\"\n]*\"\s*|'[^'\n]*'\s*)?\)"
)
#: An inline tag or autolink: at most 400 characters, never across another `<`.
_TAG = re.compile(r"<[^<>\n]{0,400}>")
#: Emphasis markers at a word's edge (`*em*`, `**strong**`, `__strong__`), each tested where it
#: stands: `2*3*4` keeps its stars, as do runs of four or more (`****`, a rule).
_EMPHASIS = re.compile(
    r"(?<![\w*])\*{1,3}(?=[^\s*])|(?<=[^\s*])\*{1,3}(?![\w*])|(?<!\w)_{1,3}(?=[^\s_])|(?<=[^\s_])_{1,3}(?!\w)"
)
#: A character reference: digits and names bounded, so `&#` and a million digits cost one scan.
_ENTITY = re.compile(r"&(?:#[0-9]{1,8};?|#[xX][0-9a-fA-F]{1,8};?|[A-Za-z][A-Za-z0-9]{1,31};?)")
_CLOSERS: dict[str, re.Pattern] = {}


def unescape(text: str) -> str:
    """HTML character references as their characters: `unescape("a &amp; b &#233;")` -> "a & b é"."""
    if "&" not in text:
        return text
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def _closer(name: str) -> re.Pattern:
    """The end tag of element `name` (`</script >`, any case)."""
    if name not in _CLOSERS:
        _CLOSERS[name] = re.compile(rf"</{re.escape(name)}(?=[\s/>])", re.I)
    return _CLOSERS[name]


def _drop_raw(text: str, deadline: float | None) -> str:
    """Markdown without its raw script, style and similar blocks and its HTML comments: an
    unclosed one runs to the end, as in a browser. Each character is looked at once."""
    out, pos, n = [], 0, len(text)
    while pos < n:
        check_deadline(deadline)
        m = _MD_RAW.search(text, pos)
        if m is None:
            break
        out.append(text[pos : m.start()])
        out.append(" ")
        if m.group(1) is None:  # a comment
            end = text.find("-->", m.end())
            pos = n if end < 0 else end + 3
        else:
            close = _closer(m.group(1).lower()).search(text, m.end())
            end = -1 if close is None else text.find(">", close.end())
            pos = n if end < 0 else end + 1
    out.append(text[pos:])
    return "".join(out)


def heading(line: str) -> tuple[int, str] | None:
    """(level, text) of an ATX heading line, None for another line; string operations only.

    `heading("## Costs ##")` -> (2, "Costs"); `heading("#hashtag")` -> None.
    """
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3 or not stripped.startswith("#"):
        return None
    body = stripped.lstrip("#")
    level = len(stripped) - len(body)
    if level > 6 or (body and body[0] not in " \t"):
        return None
    body = body.strip(" \t")
    closed = body.rstrip("#")
    if closed != body and (not closed or closed[-1] in " \t"):
        body = closed.rstrip(" \t")
    return level, body


def _md_inline(text: str) -> str:
    text = _MD_LINK.sub(lambda m: m.group(1), text)
    return unescape(_EMPHASIS.sub("", _TAG.sub(" ", text)))


def markdown_to_blocks(text: str, deadline: float | None = None) -> tuple[str, list[tuple[str, str]]]:
    """(title, blocks) of Markdown: headings become section titles; images, links and tags
    become their words. `"# T\\n\\nSee ![x](http://h/i.png) [y](z)."` -> ("T", [("T", "See x y.")])."""
    title, section, blocks, para = "", "", [], []
    text = _drop_raw(text, deadline)  # raw HTML in Markdown: a script's words are no text
    fence = ""

    def flush():
        words = " ".join(" ".join(para).split())
        if words:
            blocks.append((section, words))
        para.clear()

    for n, line in enumerate(text.split("\n")):
        if n % 1024 == 0:
            check_deadline(deadline)
        indented = line.lstrip(" ")
        mark = indented[:3] if len(line) - len(indented) <= 3 else ""  # four spaces: code, no fence
        if mark in ("```", "~~~") and (not fence or mark == fence):
            fence = "" if fence else mark  # code is text; a `#` inside it starts no section
            continue
        found = None if fence else heading(line)
        if found:
            flush()
            section = cap_title(_md_inline(found[1]))
            title = title or section
        elif not line.strip():
            flush()
        else:
            para.append(line if fence else _md_inline(line))
    flush()
    return title, blocks


# ---- HTML ----

#: The start of markup: a comment, a start or end tag, or a declaration (`<!DOCTYPE`, `<?xml`).
_MARKUP = re.compile(r"<(?:(!--)|(/?)([A-Za-z][A-Za-z0-9:-]*)|[!?])")


class _HTMLText:
    """The words of an HTML page: headings start sections; script, style and the like are dropped."""

    #: Elements whose content is no markup, up to their end tag: dropped, but for the title.
    RAW = {"script", "style", "xmp", "iframe", "noembed", "noframes", "noscript", "textarea", "title"}
    #: Elements whose markup is parsed but whose words are not the page's text.
    SKIP = {"template", "svg", "math", "object", "head"}
    BLOCK = {
        "p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "section", "article",
        "blockquote", "pre", "dd", "dt", "figcaption", "header", "footer", "main", "aside", "nav", "hr",
    }  # fmt: skip
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        self.title, self.section, self.blocks = "", "", []
        self._skip, self._in_heading = 0, False
        self._buf: list[str] = []
        self._heading: list[str] = []

    def start(self, tag: str, closed: bool) -> None:
        if tag == "body":
            self._skip = 0  # a <head> never closed ends where the body begins, as in a browser
        elif tag in self.SKIP:
            self._skip += not closed
        elif tag in self.HEADINGS:
            self._flush()
            self._in_heading, self._heading = True, []
        elif tag in self.BLOCK:
            self._flush()

    def end(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS and self._in_heading:
            self._in_heading = False
            self.section = cap_title(" ".join(self._heading))
        elif tag in self.BLOCK:
            self._flush()

    def data(self, text: str) -> None:
        if self._skip:
            return
        (self._heading if self._in_heading else self._buf).append(unescape(text))

    def _flush(self):
        words = " ".join(" ".join(self._buf).split())
        if words:
            self.blocks.append((self.section, words))
        self._buf = []

    def feed(self, text: str, deadline: float | None) -> None:
        """Read the whole page once, left to right: each character is looked at a bounded number
        of times (an unclosed comment, tag or script runs to the end, as in a browser)."""
        pos, n, count = 0, len(text), 0
        while pos < n:
            m = _MARKUP.search(text, pos)
            if m is None:
                self.data(text[pos:])
                break
            if m.start() > pos:
                self.data(text[pos : m.start()])
            count += 1
            if count % 4096 == 0:
                check_deadline(deadline)
            if m.group(1) or m.group(3) is None:  # a comment, or a declaration
                end = text.find("-->" if m.group(1) else ">", m.end())
                pos = n if end < 0 else end + (3 if m.group(1) else 1)
                continue
            end = text.find(">", m.end())
            if end < 0:
                break  # an unclosed tag runs to the end
            pos, tag = end + 1, m.group(3).lower()
            if m.group(2):
                self.end(tag)
                continue
            closed = text[end - 1] == "/" and end > m.end()
            self.start(tag, closed)
            if tag in self.RAW and not closed:
                close = _closer(tag).search(text, pos)
                inside = text[pos : close.start() if close else n]
                if tag == "title":
                    self.title = self.title or cap_title(unescape(inside))
                elif tag == "textarea":
                    self.data(inside)
                end = -1 if close is None else text.find(">", close.end())
                pos = n if end < 0 else end + 1
                self.end(tag)
        self._flush()


def html_to_blocks(text: str, deadline: float | None = None) -> tuple[str, list[tuple[str, str]]]:
    """(title, blocks) of an HTML page, as words only.

    `"<title>T</title><h1>A</h1><p>x <img src=y> <script>z</script></p>"` -> ("T", [("A", "x")]).
    """
    parser = _HTMLText()
    parser.feed(text, deadline)
    title = parser.title or next((s for s, _ in parser.blocks if s), "")
    return title, parser.blocks

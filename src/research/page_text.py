"""Text on the page is shown as text: questions, answers, file names and model metadata are hostile.

The page renders Markdown, and Gradio's Markdown renderer passes HTML through (after a sanitizer
that keeps `<img>`): a question, a model's answer or a pasted document holding `<img src=...>` or
`![](http://...)` would make the browser fetch another host, carrying the conversation off the
device. The Content-Security-Policy (research.server) stops such fetches; this module makes sure
the text is not HTML in the first place. Outside code (where Markdown shows text as it is) `&`
and `<` become entities and a Markdown image becomes a plain link (followed only when clicked);
code spans and fenced blocks are left alone, since the renderer already shows them verbatim.
`plain()` undoes exactly what `shown()` did, so what the page sends back is the text as typed.

`shown("<img src=x> & ![a](b)")` -> `"&lt;img src=x> &amp; &#33;[a](b)"`.
"""

from __future__ import annotations

import re

FIGURES = re.compile(r"\n\n<sub>◷ [^\n]*</sub>\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TICKS = re.compile(r"(?<!\\)`+")
#: Outside code: (text, as shown), applied in this order by shown() and in reverse by plain().
_OUTSIDE = (("&", "&amp;"), ("<", "&lt;"), ("![", "&#33;["))


def _segments(text: str) -> list[tuple[bool, str]]:
    """Cut text into (is_code, piece): fenced blocks and inline code spans are code.

    Only backticks, tildes and line breaks decide the cut, and shown()/plain() never change
    those, so both see the same segments. Where Markdown might not treat something as code, it
    is treated as text (escaped): the safe side.
    """
    out: list[tuple[bool, str]] = []
    lines = text.splitlines(keepends=True)
    i, para = 0, []
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            para.append(lines[i])
            if not lines[i].strip():  # a blank line ends a paragraph: code spans cannot cross it
                out += _inline("".join(para))
                para = []
            i += 1
            continue
        out += _inline("".join(para))
        para = []
        fence = m.group(1)
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        out.append((True, "".join(lines[i : j + 1])))  # an unclosed fence runs to the end
        i = j + 1
    out += _inline("".join(para))
    return out


def _inline(text: str) -> list[tuple[bool, str]]:
    """A paragraph cut into text and code spans (a run of n backticks up to the next run of n)."""
    if not text:
        return []
    out, pos, start = [], 0, 0
    runs = list(_TICKS.finditer(text))
    k = 0
    while k < len(runs):
        opener = runs[k]
        closer = next((r for r in runs[k + 1 :] if len(r.group()) == len(opener.group())), None)
        if closer is None:
            k += 1
            continue
        out.append((False, text[start : opener.start()]))
        out.append((True, text[opener.start() : closer.end()]))
        start = pos = closer.end()
        k = runs.index(closer) + 1
    out.append((False, text[max(start, pos) :]))
    return [s for s in out if s[1]]


def shown(text: str) -> str:
    """Text as the page shows it: never HTML, never an image fetched from anywhere."""
    parts = []
    for code, piece in _segments(text):
        if not code:
            for raw, safe in _OUTSIDE:
                piece = piece.replace(raw, safe)
        parts.append(piece)
    return "".join(parts)


def plain(text: str) -> str:
    """Undo shown(): `plain(shown(t)) == t` for every text t."""
    parts = []
    for code, piece in _segments(text):
        if not code:
            for raw, safe in reversed(_OUTSIDE):
                piece = piece.replace(safe, raw)
        parts.append(piece)
    return "".join(parts)


def figures(line: str) -> str:
    """The line of figures under an answer (the kit's own text, small)."""
    return f"\n\n<sub>◷ {shown(line)}</sub>"


def strip_figures(text: str) -> str:
    """`"Paris.\\n\\n<sub>◷ 3 prompt tokens …</sub>"` -> `"Paris."`."""
    return FIGURES.sub("", text)


def literal(value) -> str:
    """A value from a file or a user (a file name, a model's metadata) for one line of Markdown:
    a code span, which Markdown shows exactly as it is (no HTML, no links, no escapes to undo).

    `literal("a<b>")` -> "`a<b>`"; backticks inside get a longer fence: "``a`b``".
    """
    text = " ".join(str(value).split())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"

"""A library's document as the kit keeps it: text in blocks (section title, paragraph), cut into
passages of at most MAX_PASSAGE_CHARS characters, each carrying its heading; bytes decoded to text;
the bounds that keep a hostile document cheap (sizes, deadlines, title caps). research.library.sources
reads files into documents; research.library.markup reduces Markdown and HTML.
"""

from __future__ import annotations

import codecs
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from research.errors import KitError
from research.files import clean

#: Characters of a passage at most. GPT4All's LocalDocs cuts 512-character snippets and puts
#: three in a prompt; 600 characters are 120-200 tokens (SmolLM2: ~4.3 characters a token on
#: English prose, ~3 on numbers and names), so three passages, a system prompt, a question and
#: a short answer fit in a 1024-token context with room to spare.
MAX_PASSAGE_CHARS = 600
#: A passage shorter than this share of MAX_PASSAGE_CHARS (100 characters) does not end at a
#: section's end: the next section's heading and text join it. Without it, a file of a thousand
#: one-word sections made a thousand passages, each paying for its record and its title in the
#: index (5.8x the file). Real sections are longer: the kit's own documents cut the same as before.
SHORT_SHARE = 1 / 6
#: Characters of a document's title and of a section's name at most: more than any real title
#: (Wikipedia's longest are under 100), and a 50 KB heading copied into each passage made a
#: 651 KB Markdown file into a 101 MB index.
MAX_TITLE_CHARS = 100
#: Characters per token assumed when no tokenizer is at hand: conservative (few texts have
#: fewer), so a budget counted with it never overflows the real context.
CHARS_PER_TOKEN = 3
#: Bytes of a text, Markdown or HTML file read at most: far beyond any real document (a novel
#: is ~1 MB), and what one file may cost in memory while it is reduced to text.
MAX_TEXT_MB = 32
#: Seconds one text, Markdown or HTML file may take to become passages. The reducers are linear:
#: a 32 MB file of the worst markup measured takes well under this on the kit's machine; a phone
#: is slower, and this stops what no reducer foresaw.
READ_TIMEOUT_S = 60
#: PDF files above this size are refused before pypdf sees them.
MAX_PDF_MB = 256
#: Seconds (wall clock, and CPU in the child) a PDF may take to give its text: real PDFs of
#: hundreds of pages take a few seconds here; a looping one is stopped.
PDF_TIMEOUT_S = 60
#: Address space the PDF child may add to its own (RLIMIT_AS): a decompression bomb stops there.
PDF_MEMORY_MB = 1024
#: Characters of text kept from one PDF or one ZIM article (a 1,000-page book is ~2 M).
MAX_DOC_CHARS = 8_000_000

#: File kinds by suffix; anything else in a folder is passed over.
KINDS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".zim": "zim",
}


class SourceError(KitError):
    """One document could not be read; the message says why, in one line."""


@dataclass
class Document:
    """A document as text: its title and its blocks (section title, paragraph)."""

    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)


def kind_of(path: Path) -> str | None:
    """`kind_of(Path("a/Report.PDF"))` -> "pdf"; None for a file the library does not read."""
    return KINDS.get(path.suffix.lower())


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise SourceError("took too long to read and was stopped (it may be built to make readers slow)")


def cap_title(text: str, limit: int = MAX_TITLE_CHARS) -> str:
    """A title or heading on one line, at most `limit` characters (cut at a word, then "…").

    `cap_title("A  very\\nlong title", 12)` -> "A very long…".
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit - 1] + "…"


# ---- bytes to text ----

#: Byte-order marks and their codecs: a Windows "Unicode" text file is UTF-16 with a BOM.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


#: A file that is not valid UTF-8 is still read as UTF-8 (its bad bytes as U+FFFD) when at most
#: this share of its non-ASCII bytes is bad: one stray byte in a UTF-8 report must not turn all
#: of its accents into Windows-1252 mojibake.
UTF8_BAD_SHARE = 0.01


def decode(data: bytes) -> str:
    """A document's text: by its byte-order mark, else UTF-8, else Windows-1252 (what a file that
    is not UTF-8 most often is); controls out (clean). SourceError for binary content.

    `decode(b"caf\\xe9")` -> "café"; `decode(b"\\xff\\xfeh\\x00i\\x00")` -> "hi".
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return clean(data[len(bom) :].decode(codec, errors="replace"))
    if b"\x00" in data[:8192]:
        raise SourceError("binary content, not text")
    try:
        return clean(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    high = len(data.translate(None, bytes(range(128))))  # bytes 0x80-0xFF: the ASCII ones deleted
    if text.count("\ufffd") > UTF8_BAD_SHARE * high:
        text = data.decode("cp1252", errors="replace")
    return clean(text)


# ---- text ----


def paragraphs(text: str) -> list[str]:
    """`"a\\nb\\n\\n c "` -> ["a b", "c"]: blank lines part paragraphs, whitespace is folded."""
    return [" ".join(p.split()) for p in re.split(r"\n[^\S\n]*\n", text) if p.strip()]


def text_to_blocks(text: str, deadline: float | None = None) -> list[tuple[str, str]]:
    """Blocks of plain text: its paragraphs, in no section. `"a\\n\\nb"` -> [("", "a"), ("", "b")]."""
    check_deadline(deadline)
    return [("", p) for p in paragraphs(text)]


# ---- passages ----


def _pieces(text: str, limit: int) -> list[str]:
    """A paragraph longer than `limit` in sentence-sized pieces, words cut only when needed."""
    if len(text) <= limit:
        return [text]
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        start, end = 0, len(sentence)
        while end - start > limit:  # a sentence with no end: cut at the last space that fits
            cut = sentence.rfind(" ", start, start + limit)
            cut = cut if cut > start + limit // 2 else start + limit
            out.append(sentence[start:cut].strip())
            start = cut
            while start < end and sentence[start] == " ":
                start += 1
        if start < end:
            out.append(sentence[start:end])
    return [p for p in out if p]


def passages(doc: Document, max_chars: int = MAX_PASSAGE_CHARS) -> list[tuple[str, str]]:
    """(section title, text) passages of at most `max_chars` characters, paragraphs packed
    together within a section. A passage shorter than SHORT_SHARE of `max_chars` goes on into
    the next section, whose heading then comes into its text ("heading: text").

    `passages(Document("T", [("A", "x" * 300), ("A", "y"), ("B", "z")]))` -> [("A", "xx…x y"),
    ("B", "z")]; `passages(Document("T", [("A", "x"), ("B", "z")]))` -> [("A", "x B: z")].
    """
    out: list[tuple[str, str]] = []
    short = int(max_chars * SHORT_SHARE)
    section, buf, joined = None, "", None  # joined: the section whose heading went into buf
    for sec, para in doc.blocks:
        for piece in _pieces(para, max_chars):
            if buf and sec != section and len(buf) < short:
                lead = "" if sec == joined or not sec else f"{sec}: "
                if len(buf) + 1 + len(lead) + len(piece) <= max_chars:
                    buf += f" {lead}{piece}"
                    joined = sec
                    continue
            if sec == section and buf and len(buf) + 1 + len(piece) <= max_chars:
                buf += " " + piece
                continue
            if buf:
                out.append((section or "", buf))
            section, buf, joined = sec, piece, None
    if buf:
        out.append((section or "", buf))
    return out

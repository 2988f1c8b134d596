"""Reading the documents of a library: plain text, Markdown, HTML and PDF, cut into passages.

Every document is hostile content (a journalist's leaked files, a web page saved years ago): it is
read as text and only as text, and in time linear in its size. A file is opened only when it is
a regular file under the library's folders and read by at most a size cap (research.files).
HTML is reduced to its words by a tokenizer of this module (scripts, styles and tags dropped,
never kept as HTML); Python's html.parser is not used, since it is quadratic on some input
(CVE-2025-6069). Markdown loses its images, links and raw tags, line by line, through string
operations and regular expressions built so that no character is scanned more than a few times
(a heading regex that backtracked took 15 minutes on one 10 KB heading line). Each file has a
deadline besides (READ_TIMEOUT_S). PDF text is extracted by pypdf in a child process (this
module, run as `python -m research.library.sources --pdf FD`) under a time, CPU and memory bound,
since crafted PDFs have made pypdf loop (CVE-2023-36464) or blow up memory. ZIM files are read by
research.library.zim. A file that cannot be read is one SourceError line, and indexing goes on.

A document becomes blocks (section title, paragraph), and blocks become passages of at most
MAX_PASSAGE_CHARS characters, each carrying its heading. Titles and headings are capped
(MAX_TITLE_CHARS) and a section too short for a passage of its own shares one with the next, so
no document's index is more than a small multiple of its size (README, "Answers from your own
library").
"""

from __future__ import annotations

import codecs
import html
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from research import child, files
from research.errors import KitError
from research.files import clean
from research.units import MB

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


def _check(deadline: float | None) -> None:
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
    high = len(data) - len(data.translate(None, bytes(range(128))))  # bytes 0x80-0xFF
    if text.count("\ufffd") > UTF8_BAD_SHARE * high:
        text = data.decode("cp1252", errors="replace")
    return clean(text)


# ---- text ----


def paragraphs(text: str) -> list[str]:
    """`"a\\nb\\n\\n c "` -> ["a b", "c"]: blank lines part paragraphs, whitespace is folded."""
    return [" ".join(p.split()) for p in re.split(r"\n[^\S\n]*\n", text) if p.strip()]


def text_to_blocks(text: str, deadline: float | None = None) -> list[tuple[str, str]]:
    """Blocks of plain text: its paragraphs, in no section. `"a\\n\\nb"` -> [("", "a"), ("", "b")]."""
    _check(deadline)
    return [("", p) for p in paragraphs(text)]


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
        _check(deadline)
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
            _check(deadline)
        mark = line.lstrip(" ")[:3]
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
                _check(deadline)
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


# ---- reading a file ----


def _title_of(path: Path) -> str:
    return cap_title(clean(path.stem))


def read_text(path: Path, text: str, deadline: float | None = None) -> Document:
    return Document(_title_of(path), text_to_blocks(text, deadline))


def read_markdown(path: Path, text: str, deadline: float | None = None) -> Document:
    title, blocks = markdown_to_blocks(text, deadline)
    return Document(title or _title_of(path), blocks)


def read_html(path: Path, text: str, deadline: float | None = None) -> Document:
    title, blocks = html_to_blocks(text, deadline)
    return Document(title or _title_of(path), blocks)


READERS = {"text": read_text, "markdown": read_markdown, "html": read_html}


def read(path: Path, roots: Sequence[Path] = (), timeout: float | None = None) -> Document:
    """A document file (not a ZIM) as a Document, read only as a regular file under `roots` (any
    regular file when empty); SourceError in one line when it cannot be read."""
    kind = kind_of(path)
    if kind == "pdf":
        return read_pdf(path, roots=roots)
    if kind not in READERS:
        raise SourceError(f"not a kind of document the library reads ({', '.join(sorted(KINDS))})")
    deadline = time.monotonic() + (timeout or READ_TIMEOUT_S)
    try:
        text = decode(files.read_file(path, MAX_TEXT_MB, roots))
        return READERS[kind](path, text, deadline)
    except KitError as e:
        raise SourceError(str(e)) from None
    except (OSError, ValueError, RecursionError) as e:
        raise SourceError(f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
    except MemoryError:
        raise SourceError("not enough memory to read it") from None


# ---- PDF, in a child process ----

_SRC = Path(__file__).resolve().parents[1]  # the folder holding `research`: the child's cwd


def read_pdf(
    path: Path, timeout: float | None = None, cmd: list[str] | None = None, roots: Sequence[Path] = ()
) -> Document:
    """The text of a PDF, extracted by pypdf in a bounded child process (PDF_TIMEOUT_S by default).

    The file is opened here (a regular file under `roots`) and handed to the child open, so the
    child reads the file that was checked. `cmd` replaces the child's command (tests simulate a
    hang or a crash with it).
    """
    try:
        with files.opened(path, roots) as fd:
            size = os.fstat(fd).st_size
            if size > MAX_PDF_MB * MB:
                raise SourceError(f"{size / MB:.0f} MB is more than the {MAX_PDF_MB} MB a PDF may have")
            r = child.run(
                cmd or child.python_module("research.library.sources", "--pdf", fd),
                "reading the PDF",
                timeout=timeout or PDF_TIMEOUT_S,
                timeout_hint=" (it may be built to make readers loop)",
                crash_hint=": the file is damaged or hostile",
                # `python -m` puts its working folder first on sys.path: a `pypdf.py` among the
                # user's documents must not be what the child imports.
                cwd=_SRC,
                pass_fds=(fd,),
            )
        # the child writes ASCII JSON: a U+2028 in the text cannot end its line early
        out = json.loads(r.stdout.rstrip("\n").rsplit("\n", 1)[-1] or "null")
        if not isinstance(out, dict) or not isinstance(out.get("pages"), list):
            raise SourceError("the PDF reader gave no text (damaged or hostile)")
    except KitError as e:
        raise SourceError(str(e)) from None
    except json.JSONDecodeError:
        raise SourceError("the PDF reader gave no text (damaged or hostile)") from None
    blocks = [("", p) for page in out["pages"] for p in pdf_paragraphs(clean(str(page)))]
    return Document(cap_title(clean(str(out.get("title") or ""))) or _title_of(path), blocks)


def pdf_paragraphs(page: str) -> list[str]:
    """Paragraphs of a PDF page's text, where pypdf gives lines only: a line that ends a sentence
    well short of the page's longest line ends its paragraph (as do blank lines).

    `pdf_paragraphs("A long first line of text\nends here.\nNext one.")` -> ["A long first line of text
    ends here.", "Next one."]
    """
    lines = page.split("\n")
    width = max((len(line.rstrip()) for line in lines), default=0)
    out, para = [], []
    for line in lines:
        para.append(line)
        text = line.rstrip()
        if not text or (text[-1] in ".!?:" and len(text) < 0.85 * width):
            out += paragraphs("\n".join(para))
            para = []
    return out + paragraphs("\n".join(para))


def limit_child(cpu_s: int | None, memory_mb: int, resource_name: str = "RLIMIT_AS") -> None:
    """Bound a reading child: CPU seconds (None: the parent's clock alone), memory added to what
    it holds now, no core dump.

    RLIMIT_AS counts every mapping; RLIMIT_DATA (what the ZIM children use) leaves out files
    mapped read-only, which libzim maps, and counts the heap and private mappings.
    """
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cpu_s is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    try:
        field_name = "VmSize:" if resource_name == "RLIMIT_AS" else "VmData:"
        now = int(Path("/proc/self/status").read_text().split(field_name)[1].split()[0]) * 1024
        limit = now + memory_mb * MB
        resource.setrlimit(getattr(resource, resource_name), (limit, limit))
    except (OSError, IndexError, ValueError, AttributeError):
        pass  # no /proc (macOS): the parent's wall clock still bounds it


def _extract_pdf(fd: int) -> None:
    """The child: print {"title", "pages"} as one ASCII JSON line; a failure is one KitError line."""
    import logging

    limit_child(PDF_TIMEOUT_S, PDF_MEMORY_MB)
    logging.disable(logging.WARNING)  # pypdf warns on every odd object; the parent wants one line
    from pypdf import PdfReader

    try:
        reader = PdfReader(os.fdopen(fd, "rb"), strict=False)
        if reader.is_encrypted:
            try:
                reader.decrypt("")  # many PDFs are "encrypted" with an empty password
            except Exception:
                raise KitError("encrypted PDF: give the kit an unencrypted copy") from None
        title = ""
        try:
            title = str((reader.metadata or {}).get("/Title") or "")
        except Exception:
            pass  # a broken info dictionary costs the title only
        pages, total = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            pages.append(text[: MAX_DOC_CHARS - total])
            total += len(pages[-1])
            if total >= MAX_DOC_CHARS:
                break
    except MemoryError:
        raise KitError(f"the PDF needs more than {PDF_MEMORY_MB} MB to read: damaged or hostile") from None
    except RecursionError:
        raise KitError("the PDF's objects nest without end: damaged or hostile") from None
    except KitError:
        raise
    except Exception as e:  # pypdf raises many kinds on a damaged file: each is one line here
        raise KitError(f"not a readable PDF ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if not any(p.strip() for p in pages):
        raise KitError("the PDF holds no text (scanned pages need OCR first)")
    print(json.dumps({"title": cap_title(title), "pages": pages}, ensure_ascii=True))


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


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--pdf"]:
        _extract_pdf(int(argv[1]))
    else:
        raise KitError("usage: python -m research.library.sources --pdf FD")


if __name__ == "__main__":
    sys.setrecursionlimit(3000)
    child.child_main(_main)

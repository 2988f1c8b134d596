"""Reading the documents of a library: plain text, Markdown, HTML, PDF and Kiwix ZIM, cut into passages.

Every document is hostile content (a journalist's leaked files, a web page saved years ago): it is
read as text and only as text. HTML is reduced to its words (scripts, styles and tags dropped,
never kept as HTML); Markdown loses its images, links and raw tags; PDF text is extracted by
pypdf in a child process (this module, run as `python -m research.library_sources PATH`) under
a time, CPU and memory bound, since crafted PDFs have made pypdf loop (CVE-2023-36464) or blow
up memory; ZIM articles are read through libzim. A file that cannot be read is one SourceError
line, and the indexing goes on without it.

A document becomes blocks (section title, paragraph), and blocks become passages of at most
MAX_PASSAGE_CHARS characters, never across a section, so each passage carries its heading.
"""

from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from research import child
from research.errors import KitError
from research.units import MB

#: Characters of a passage at most. GPT4All's LocalDocs cuts 512-character snippets and puts
#: three in a prompt; 600 characters are 120-200 tokens (SmolLM2: ~4.3 characters a token on
#: English prose, ~3 on numbers and names), so three passages, a system prompt, a question and
#: a short answer fit in a 1024-token context with room to spare.
MAX_PASSAGE_CHARS = 600
#: Characters per token assumed when no tokenizer is at hand: conservative (few texts have
#: fewer), so a budget counted with it never overflows the real context.
CHARS_PER_TOKEN = 3
#: Bytes of a text, Markdown or HTML file read at most: far beyond any real document (a novel
#: is ~1 MB), and what one file may cost in memory while it is reduced to text.
MAX_TEXT_MB = 32
#: PDF files above this size are refused before pypdf sees them.
MAX_PDF_MB = 256
#: Seconds (wall clock, and CPU in the child) a PDF may take to give its text: real PDFs of
#: hundreds of pages take a few seconds here; a looping one is stopped.
PDF_TIMEOUT_S = 60
#: Address space the PDF child may add to its own (RLIMIT_AS): a decompression bomb stops there.
PDF_MEMORY_MB = 1024
#: Characters of text kept from one PDF or one ZIM article (a 1,000-page book is ~2 M).
MAX_DOC_CHARS = 8_000_000
#: Bytes of a ZIM article read at most (Wikipedia's longest articles are ~1 MB of HTML).
MAX_ZIM_ARTICLE_BYTES = 8 * MB

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


# ---- text, Markdown, HTML ----


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_TEXT_MB * MB:
        raise SourceError(f"{size / MB:.0f} MB is more than the {MAX_TEXT_MB} MB a text document may have")
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise SourceError("binary content, not text")
    return data.decode("utf-8", errors="replace").lstrip("\ufeff")


def paragraphs(text: str) -> list[str]:
    """`"a\\nb\\n\\n c "` -> ["a b", "c"]: blank lines part paragraphs, whitespace is folded."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def read_text(path: Path) -> Document:
    return Document(path.stem, [("", p) for p in paragraphs(_read_text(path))])


_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_TAG = re.compile(r"<[^>\n]{0,400}>")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_RAW_BLOCK = re.compile(r"<(script|style|template|iframe|object|svg)\b.*?(</\1\s*>|\Z)", re.I | re.S)
_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,3}|_{2,3})(\S(?:.*?\S)?)\1(?![\w*])")


def markdown_to_blocks(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, blocks) of Markdown: headings become section titles; images, links and tags
    become their words. `"# T\\n\\nSee ![x](http://h/i.png) [y](z)."` -> ("T", [("T", "See x y.")])."""
    title, section, blocks, para = "", "", [], []
    text = _RAW_BLOCK.sub(" ", text)  # raw HTML in Markdown: a script's words are no text

    def flush():
        words = " ".join(" ".join(para).split())
        if words:
            blocks.append((section, words))
        para.clear()

    for line in text.splitlines():
        m = _HEADING.match(line)
        if m:
            flush()
            section = _md_inline(m.group(2))
            title = title or section
        elif not line.strip():
            flush()
        else:
            para.append(_md_inline(line))
    flush()
    return title, blocks


def _md_inline(text: str) -> str:
    text = _MD_LINK.sub(r"\1", _MD_IMAGE.sub(r"\1", text))
    return html.unescape(_EMPHASIS.sub(r"\2", _TAG.sub(" ", text)))


def read_markdown(path: Path) -> Document:
    title, blocks = markdown_to_blocks(_read_text(path))
    return Document(title or path.stem, blocks)


class _HTMLText(HTMLParser):
    """The words of an HTML page: headings start sections; script, style and the like are dropped."""

    SKIP = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "head"}
    BLOCK = {
        "p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "section", "article",
        "blockquote", "pre", "dd", "dt", "figcaption", "header", "footer", "main", "aside", "nav", "hr",
    }  # fmt: skip
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title, self.section, self.blocks = "", "", []
        self._skip, self._in_title, self._in_heading = 0, False, False
        self._buf: list[str] = []
        self._heading: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.HEADINGS:
            self._flush()
            self._in_heading, self._heading = True, []
        elif tag in self.BLOCK:
            self._flush()

    def handle_startendtag(self, tag, attrs):
        if tag in self.BLOCK:
            self._flush()

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.HEADINGS and self._in_heading:
            self._in_heading = False
            self.section = " ".join(" ".join(self._heading).split())
        elif tag in self.BLOCK:
            self._flush()

    def handle_data(self, data):
        if self._in_title:  # <title> lives in <head>, which is otherwise skipped
            self.title += data
        elif self._skip:
            return
        elif self._in_heading:
            self._heading.append(data)
        else:
            self._buf.append(data)

    def _flush(self):
        words = " ".join(" ".join(self._buf).split())
        if words:
            self.blocks.append((self.section, words))
        self._buf = []

    def close(self):
        super().close()
        self._flush()


def html_to_blocks(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, blocks) of an HTML page, as words only.

    `"<title>T</title><h1>A</h1><p>x <img src=y> <script>z</script></p>"` -> ("T", [("A", "x")]).
    """
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    title = " ".join(parser.title.split())
    if not title:
        title = next((s for s, _ in parser.blocks if s), "")
    return title, parser.blocks


def read_html(path: Path) -> Document:
    title, blocks = html_to_blocks(_read_text(path))
    return Document(title or path.stem, blocks)


# ---- PDF, in a child process ----

_SRC = Path(__file__).resolve().parents[1]  # the folder holding `research`: the child's cwd


def read_pdf(path: Path, timeout: float | None = None, cmd: list[str] | None = None) -> Document:
    """The text of a PDF, extracted by pypdf in a bounded child process (PDF_TIMEOUT_S by default).

    `cmd` replaces the child's command (tests simulate a hang or a crash with it).
    """
    size = path.stat().st_size
    if size > MAX_PDF_MB * MB:
        raise SourceError(f"{size / MB:.0f} MB is more than the {MAX_PDF_MB} MB a PDF may have")
    try:
        r = child.run(
            cmd or child.python_module("research.library_sources", path.resolve()),
            "reading the PDF",
            timeout=timeout or PDF_TIMEOUT_S,
            timeout_hint=" (it may be built to make readers loop)",
            crash_hint=": the file is damaged or hostile",
            # `python -m` puts its working folder first on sys.path: a `pypdf.py` among the
            # user's documents must not be what the child imports.
            cwd=_SRC,
        )
        out = json.loads(child.last_line(r.stdout) or "{}")
    except (KitError, json.JSONDecodeError) as e:
        raise SourceError(str(e)) from None
    blocks = [("", p) for page in out.get("pages", []) for p in pdf_paragraphs(page)]
    return Document(out.get("title") or path.stem, blocks)


def pdf_paragraphs(page: str) -> list[str]:
    """Paragraphs of a PDF page's text, where pypdf gives lines only: a line that ends a sentence
    well short of the page's longest line ends its paragraph (as do blank lines).

    `pdf_paragraphs("A long first line of text\nends here.\nNext one.")` -> ["A long first line of text
    ends here.", "Next one."]
    """
    lines = page.splitlines()
    width = max((len(line.rstrip()) for line in lines), default=0)
    out, para = [], []
    for line in lines:
        para.append(line)
        text = line.rstrip()
        if not text or (text[-1] in ".!?:" and len(text) < 0.85 * width):
            out += paragraphs("\n".join(para))
            para = []
    return out + paragraphs("\n".join(para))


def _limit_child() -> None:
    """Bound the PDF child: CPU seconds, address space, no core dump."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (PDF_TIMEOUT_S, PDF_TIMEOUT_S + 5))
    try:
        now = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
        limit = now + PDF_MEMORY_MB * MB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, IndexError, ValueError):
        pass  # no /proc (macOS): the parent's wall clock still bounds it


def _extract_pdf(argv: list[str]) -> None:
    """The child: print {"title", "pages"} as one JSON line; a failure is one KitError line."""
    import logging

    _limit_child()
    logging.disable(logging.WARNING)  # pypdf warns on every odd object; the parent wants one line
    from pypdf import PdfReader

    try:
        reader = PdfReader(argv[0], strict=False)
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
    print(json.dumps({"title": " ".join(title.split())[:200], "pages": pages}, ensure_ascii=False))


# ---- ZIM ----


def open_zim(path: Path):
    """A libzim Archive; SourceError when libzim cannot open the file."""
    try:
        from libzim.reader import Archive
    except ImportError:  # no wheel for this platform (Android): the rest of the library works
        raise SourceError("reading ZIM files needs libzim: pip install libzim") from None

    try:
        return Archive(str(path))
    except Exception as e:  # libzim raises RuntimeError and others for a damaged file
        raise SourceError(f"not a readable ZIM file ({' '.join(str(e).split())[:160]})") from None


def probe_zim(path: Path, timeout: float = 60) -> None:
    """Open a ZIM, read its metadata and search it once in a child process: a file that makes
    libzim (C++) crash ends the child, not the kit; SourceError in one line."""
    try:
        child.run(
            child.python_module("research.library_sources", "--probe-zim", path.resolve()),
            "opening the ZIM file",
            timeout=timeout,
            crash_hint=": the file is damaged or hostile",
            cwd=_SRC,
        )
    except KitError as e:
        raise SourceError(str(e)) from None


def _probe_zim(path: str) -> None:
    archive = open_zim(Path(path))
    if archive.has_fulltext_index:
        from libzim.search import Query, Searcher

        Searcher(archive).search(Query().set_query("the")).getEstimatedMatches()
    if archive.entry_count:
        zim_article(archive, 0)


def zim_title(archive) -> str:
    try:
        return " ".join(bytes(archive.get_metadata("Title")).decode("utf-8", "replace").split())[:200]
    except Exception:
        return ""


def zim_article(archive, index: int) -> Document | None:
    """Entry `index` of a ZIM as a Document, or None when it is not a text article (an image, a
    redirect, a style sheet) or is too large; SourceError when libzim cannot read it."""
    try:
        entry = archive._get_entry_by_id(index)
        if entry.is_redirect:
            return None
        item = entry.get_item()
        mime = item.mimetype.split(";")[0].strip().lower()
        if mime not in ("text/html", "text/plain") or item.size > MAX_ZIM_ARTICLE_BYTES:
            return None
        text = bytes(item.content).decode("utf-8", errors="replace")
        title = entry.title
    except Exception as e:
        raise SourceError(f"entry {index} cannot be read ({' '.join(str(e).split())[:120]})") from None
    if mime == "text/plain":
        return Document(title, [("", p) for p in paragraphs(text)])
    page_title, blocks = html_to_blocks(text[:MAX_DOC_CHARS])
    return Document(title or page_title, blocks)


# ---- passages ----


def _pieces(text: str, limit: int) -> list[str]:
    """A paragraph longer than `limit` in sentence-sized pieces, words cut only when needed."""
    if len(text) <= limit:
        return [text]
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        while len(sentence) > limit:  # a sentence with no end: cut at the last space that fits
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def passages(doc: Document, max_chars: int = MAX_PASSAGE_CHARS) -> list[tuple[str, str]]:
    """(section title, text) passages of at most `max_chars` characters, paragraphs packed
    together within a section.

    `passages(Document("T", [("A", "x"), ("A", "y"), ("B", "z")]))` -> [("A", "x y"), ("B", "z")].
    """
    out: list[tuple[str, str]] = []
    section, buf = None, ""
    for sec, para in doc.blocks:
        for piece in _pieces(para, max_chars):
            if sec == section and buf and len(buf) + 1 + len(piece) <= max_chars:
                buf += " " + piece
                continue
            if buf:
                out.append((section or "", buf))
            section, buf = sec, piece
    if buf:
        out.append((section or "", buf))
    return out


READERS = {"text": read_text, "markdown": read_markdown, "html": read_html, "pdf": read_pdf}


def read(path: Path) -> Document:
    """A document file (not a ZIM) as a Document; SourceError in one line when it cannot be read."""
    kind = kind_of(path)
    if kind not in READERS:
        raise SourceError(f"not a kind of document the library reads ({', '.join(sorted(KINDS))})")
    try:
        return READERS[kind](path)
    except SourceError:
        raise
    except (OSError, ValueError, RecursionError) as e:
        raise SourceError(f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--probe-zim"]:
        _probe_zim(argv[1])
    else:
        _extract_pdf(argv)


if __name__ == "__main__":
    sys.setrecursionlimit(3000)
    child.child_main(_main)

"""Reading the documents of a library: plain text, Markdown, HTML and PDF, cut into passages.

Every document is hostile content (a journalist's leaked files, a web page saved years ago): it is
read as text and only as text, and in time linear in its size. A file is opened only when it is
a regular file under the library's folders and read by at most a size cap (research.files).
HTML and Markdown are reduced to their words in linear time by research.library.markup. Each file
has a deadline besides (READ_TIMEOUT_S). PDF text is extracted by pypdf in a child process (this
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

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from research import child, files
from research.errors import KitError
from research.files import clean
from research.library.document import (  # noqa: F401 (research.library.sources is where readers look them up)
    CHARS_PER_TOKEN,
    KINDS,
    MAX_DOC_CHARS,
    MAX_PASSAGE_CHARS,
    MAX_PDF_MB,
    MAX_TEXT_MB,
    MAX_TITLE_CHARS,
    PDF_MEMORY_MB,
    PDF_TIMEOUT_S,
    READ_TIMEOUT_S,
    SHORT_SHARE,
    Document,
    SourceError,
    cap_title,
    check_deadline,
    decode,
    kind_of,
    paragraphs,
    passages,
    text_to_blocks,
)
from research.library.markup import html_to_blocks, markdown_to_blocks, unescape  # noqa: F401
from research.paths import PACKAGE_PARENT
from research.units import MB

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

_SRC = PACKAGE_PARENT  # the folder holding `research`: the child's working folder


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


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--pdf"]:
        _extract_pdf(int(argv[1]))
    else:
        raise KitError("usage: python -m research.library.sources --pdf FD")


if __name__ == "__main__":
    sys.setrecursionlimit(3000)
    child.child_main(_main)

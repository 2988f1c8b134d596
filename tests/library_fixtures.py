"""Documents for the library's tests: a PDF writer, a ZIM writer (libzim's own) and hostile files.

`python tests/library_fixtures.py` writes data/library/docs/tamsin_orchard_report.pdf from
ORCHARD_REPORT below: the PDF of the kit's library question set is made here, byte for byte
reproducible (tests/test_library.py checks the committed file against it).
"""

from __future__ import annotations

import sys
import textwrap
import zlib
from pathlib import Path

ORCHARD_TITLE = "Tamsin Valley Orchard Cooperative - Harvest Report 2025"
ORCHARD_REPORT = [
    ORCHARD_TITLE,
    "The Tamsin Valley Orchard Cooperative brings together 46 member farms on the slopes of the Tamsin "
    "valley. It was set up in 1987 to share a cold store and a packing line. The cooperative is chaired "
    "by Maud Ellery, who grows apples and plums at Hollin Farm.",
    "Varieties. The main apple variety of the cooperative is Copper Queen, a late russet apple that "
    "keeps until March. Members also grow the early apple Tamsin Gold and a cooking apple, Grey Abbot. "
    "The only pear variety grown for sale is Winter Bell.",
    "The harvest. Members picked 1,870 tonnes of apples in 2025, up from 1,640 tonnes in 2024, and 212 "
    "tonnes of pears. A late frost on 22 April damaged the blossoms in the upper orchards, where the "
    "harvest was a third lower than usual.",
    "Prices. The cooperative paid its members 6.40 crowns per crate of dessert apples, and 3.10 crowns "
    "per crate of cooking apples. Pears fetched 7.20 crowns per crate.",
    "Investment. A new cider press was installed at Brindle Mill in September, so that apples too small "
    "for the packing line can be pressed within a day. The press can handle 4 tonnes an hour.",
    "Next year. The cooperative aims for a harvest of 2,000 tonnes of apples in 2026 and will plant 3,000 "
    "new Copper Queen trees on land leased from the parish.",
]


def _pdf_string(text: str) -> bytes:
    """A PDF literal string: `a(b)` -> b"(a\\\\(b\\\\))"."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1", "replace") + b")"


def minimal_pdf(
    paragraphs: list[str],
    title: str = "",
    width: int = 88,
    lines_per_page: int = 50,
    to_unicode: dict[int, str] | None = None,
) -> bytes:
    """A small valid PDF 1.4 of text paragraphs in Helvetica (A4, one blank line between them).

    No library writes it: object offsets and the cross-reference table are computed here, so the
    same text always makes the same bytes. `to_unicode` maps byte codes of the text to the
    characters a reader extracts for them (the font's ToUnicode CMap), e.g. {0x85: "\u2028"}.
    """
    lines: list[str] = []
    for p in paragraphs:
        lines += textwrap.wrap(p, width) + [""]
    pages = [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)] or [[]]
    objects: list[bytes] = []  # object n is objects[n - 1]
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    cmap_ref = f" /ToUnicode {4 + 2 * n_pages} 0 R" if to_unicode else ""
    objects.append(f"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica{cmap_ref} >>".encode())
    for i, page in enumerate(pages):
        body = (
            b"BT /F1 11 Tf 14 TL 50 800 Td\n" + b"".join(_pdf_string(line) + b" '\n" for line in page) + b"ET"
        )
        stream = zlib.compress(body, 9)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(
            f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream"
        )
    if to_unicode:
        chars = "".join(f"<{code:02X}> <{ord(c):04X}>\n" for code, c in sorted(to_unicode.items()))
        cmap = (
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
            "1 begincodespacerange\n<00> <FF>\nendcodespacerange\n"
            f"{len(to_unicode)} beginbfchar\n{chars}endbfchar\n"
            "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend"
        ).encode()
        objects.append(f"<< /Length {len(cmap)} >>\nstream\n".encode() + cmap + b"\nendstream")
    objects.append(b"<< /Title " + _pdf_string(title) + b" /Producer (research tests/library_fixtures.py) >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


def orchard_pdf() -> bytes:
    return minimal_pdf(ORCHARD_REPORT, ORCHARD_TITLE)


def write_zim(path: Path, articles: dict[str, tuple[str, str]], fulltext: bool = True) -> Path:
    """A ZIM file made with libzim's own writer: {path: (title, html)}, with or without its
    full-text index."""
    from libzim.writer import Creator, Hint, Item, StringProvider

    class Page(Item):
        def __init__(self, path, title, html):
            super().__init__()
            self.path, self.title, self.html = path, title, html

        def get_path(self):
            return self.path

        def get_title(self):
            return self.title

        def get_mimetype(self):
            return "text/html"

        def get_contentprovider(self):
            return StringProvider(self.html)

        def get_hints(self):
            return {Hint.FRONT_ARTICLE: True}

    with Creator(str(path)).config_indexing(fulltext, "eng") as creator:
        creator.set_mainpath(next(iter(articles)))
        creator.add_metadata("Title", "Test wiki")
        creator.add_metadata("Language", "eng")
        for entry, (title, html) in articles.items():
            creator.add_item(Page(entry, title, html))
    return path


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "data" / "library" / "docs" / "tamsin_orchard_report.pdf"
    out.write_bytes(orchard_pdf())
    print(out, len(out.read_bytes()), "bytes", file=sys.stderr)

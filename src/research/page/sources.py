"""A library's passages on the page: the sources listed under an answer, each a link to the page's
own /passage route, and the passage that route serves as plain text. Retrieved text is hostile:
titles, file names and snippets are page_text.literal, and the route serves text/plain.
"""

from __future__ import annotations

from collections.abc import Sequence

from research.errors import KitError
from research.library import store as lib
from research.library.grounded import Source
from research.page import text as page_text


def passage_url(library: str, pid: str) -> str:
    """The page's local route for a passage: `/passage/kit/3-17` (both parts checked, URL-safe)."""
    lib.check_name(library)
    if not lib.PASSAGE_ID.fullmatch(pid):
        raise KitError(f"{pid!r} is not a passage id")
    return f"/passage/{library}/{pid}"


def sources_markdown(
    library: str, sources: Sequence[Source | dict], cited_numbers: Sequence[int] = ()
) -> str:
    """The sources under an answer, as Markdown that can hold no HTML, image or outside link.

    Titles, file names and snippets are code spans (page_text.literal); each source links to
    the kit's own route /passage/<library>/<id>, which serves the passage as text.
    """
    if not sources:
        return ""
    lines = ["**Sources**", ""]
    for s in sources:
        d = s.as_dict() if isinstance(s, Source) else s
        h = s.hit if isinstance(s, Source) else None
        mark = " ✓ cited" if d["n"] in cited_numbers else ""
        name = d["source"].rsplit("/", 1)[-1]
        snippet = (h.text if h else d.get("text", ""))[:160]
        lines.append(
            f"{d['n']}. [{page_text.literal(d['title'])}]({passage_url(library, d['id'])}) · "
            f"{page_text.literal(name)} · passage {int(d['position'])} · score {float(d['score']):.2f}{mark}"
        )
        if snippet:
            lines.append(f"   {page_text.literal(snippet + ('…' if len(snippet) == 160 else ''))}")
    return "\n".join(lines)


def passage_text(library: str, pid: str) -> str:
    """A passage as plain text for the page's /passage route: a header line, then the passage.

    KitError (one line) for a library or id that does not exist, or a library updated since.
    """
    hit = lib.open_library(library).passage(pid)
    return f"{hit.title}\n{hit.source} · passage {hit.position}\n\n{hit.text}\n"

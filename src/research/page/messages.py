"""The page's messages: the chatbot's values read and written (text, figures, sources, answer ids),
the sampling controls as one Sampling, and the page's settings and labels. Pure helpers of the
model host (research.page.host) and of the page's layout (demo/app.py).
"""

from __future__ import annotations

import dataclasses

from research import confidence
from research.engine import CHAT_SYSTEM, Sampling, Stats
from research.errors import KitError
from research.models.catalog import catalog, resolve
from research.page import text as page_text

DEFAULT_SYSTEM = CHAT_SYSTEM
#: At most one page update every 250 ms. Gradio sends only the new text, but the browser renders
#: the whole answer's Markdown again with each update, on a core the model needs: in Chromium on
#: 2 cores, with every llama.cpp call on one thread (ModelHost), the page painted 74 % of the
#: engine alone's speed at 20 updates a second and 102 % at 4, a minute apart
#: (`python -m research bench --page --threads 2 --reps 7`, with this set to 0.05 and to 0.25).
STREAM_INTERVAL_S = 0.25
#: ... and less often as the answer grows, since each update costs the browser a render of the
#: whole answer: one more interval per STREAM_CHARS characters, so the browser's work a second
#: stays about what a short answer costs it, up to one update a second (answers past 8,000
#: characters: 2,000 tokens and more).
STREAM_CHARS, STREAM_MAX_INTERVAL_S = 2000, 1.0
#: The page's sampling controls, in the order the page lays them out: Sampling's own fields.
KNOBS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed")
#: Answers whose provenance the page remembers (a few hundred bytes each), oldest forgotten first.
REMEMBERED_ANSWERS = 10_000


def stream_interval(chars: int) -> float:
    """Seconds from one page update of an answer `chars` long to the next (see STREAM_CHARS)."""
    return min(STREAM_MAX_INTERVAL_S, STREAM_INTERVAL_S * max(1.0, chars / STREAM_CHARS))


def text_of(content) -> str:
    """Message content as plain text: Gradio 6 sends a list of parts, older code a string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, dict):
        return content.get("text", "")
    return ""


def with_figures(answer: str, stats: Stats, conf: confidence.Confidence | None = None) -> str:
    """An answer as the page shows it: its text shown as text, then its line of figures, which
    starts with how likely the answer is to be right ("likely right, 82 % · 9 prompt tokens …")."""
    line = stats.line() if conf is None else f"{conf.words} · {stats.line()}"
    return page_text.shown(answer) + page_text.figures(line)


#: What "answer only when sure" shows in place of an answer below its threshold: the kit's one.
NOT_SURE = confidence.NOT_SURE
#: What "answer only when sure" shows while the answer is written and before its confidence is known.
CHECKING = "_Answering: shown when it is known to be sure enough…_"


def history_messages(history: list[dict]) -> list[dict]:
    """Chatbot value -> plain {"role", "content"} messages: the text as typed or generated."""
    out = []
    for m in history or []:
        role = m.get("role") if isinstance(m, dict) else None
        if role in ("user", "assistant"):
            out.append({"role": role, "content": answer_text(m.get("content"))})
    return out


#: The page's choice of no library, and the lookup modes as it names them.
NO_LIBRARY = "(none: the model alone)"
LOOKUP = {
    "always": "every question",
    "unsure": "only when the model's own answer is unsure",
    "never": "never (the model alone, for comparison)",
}
#: Where the sources start under an answer: the kit's own HTML, which shown() makes impossible in
#: an answer's text (its `<` becomes `&lt;`), so an answer cannot end itself early.
SOURCES_HEAD = "\n\n<sub>📚 Sources</sub>"


def strip_sources(text: str) -> str:
    """An answer without the sources the page listed under it."""
    return text.split(SOURCES_HEAD, 1)[0]


def answer_text(content) -> str:
    """A message as its author wrote it: without the sources and the figures the page added under
    it, its text shown as text turned back into plain text."""
    return page_text.plain(page_text.strip_figures(strip_sources(text_of(content))))


def answer_id_of(message: dict) -> str | None:
    meta = message.get("metadata") if isinstance(message, dict) else None
    return str(meta["id"]) if isinstance(meta, dict) and meta.get("id") else None


def sampling_from(temperature, top_k, top_p, min_p, repeat_penalty, max_tokens, seed) -> Sampling:
    """Sampling from the page's controls (KNOBS); a seed of -1 or empty means random.

    Values come from sliders or from anyone calling the page's API: Sampling checks their ranges.
    """
    try:
        seed = None if seed in (None, "", -1) else int(seed)
        return Sampling(
            float(temperature),
            int(top_k),
            float(top_p),
            float(min_p),
            float(repeat_penalty),
            int(max_tokens),
            seed,
        )
    except (TypeError, ValueError) as e:
        raise KitError(f"a sampling setting is not a number: {e}") from None


def _assistant_message(history: list[dict], index: int | None) -> dict:
    """The answer message at `index` of the chatbot value (default: the last answer)."""
    history = list(history or [])
    if index is None:
        index = max((i for i, m in enumerate(history) if m.get("role") == "assistant"), default=-1)
    if not 0 <= index < len(history) or history[index].get("role") != "assistant":
        raise KitError("nothing to rate: ask a question and wait for its answer first")
    return history[index]


def present_models() -> list[str]:
    """Catalog ids whose files are on this device (the page's model picker)."""
    return [e.id for e in catalog().values() if e.local_path() is not None]


def settings_dict(sampling: Sampling) -> dict:
    return dataclasses.asdict(sampling)


def model_label(name: str | None) -> str:
    try:
        return resolve(name).id
    except KitError:
        return str(name)

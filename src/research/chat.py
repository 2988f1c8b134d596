"""The chat logic behind the page: one shared model, per-session stop, history, ratings, export.

The page (demo/app.py) only lays out components and wires them to these functions, so the
same logic is tested without a browser.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from research import ratings
from research.engine import Engine, EngineConfig, Sampling, Stats
from research.errors import KitError
from research.models import catalog, resolve

DEFAULT_SYSTEM = "You are a helpful assistant. Answer the question briefly and accurately."
#: At most one page update every 50 ms (20 a second reads as smooth streaming). Gradio sends the
#: whole conversation with every update; one per token cost a third of the decode speed on 2 cores.
STREAM_INTERVAL_S = 0.05
FIGURES = re.compile(r"\n\n<sub>◷ [^\n]*</sub>\s*$")


def text_of(content) -> str:
    """Message content as plain text: Gradio 6 sends a list of parts, older code a string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, dict):
        return content.get("text", "")
    return ""


def strip_figures(text: str) -> str:
    """`"Paris.\\n\\n<sub>◷ 3 prompt tokens …</sub>"` -> `"Paris."`."""
    return FIGURES.sub("", text)


def with_figures(answer: str, stats: Stats) -> str:
    return f"{answer}\n\n<sub>◷ {stats.line()}</sub>"


def history_messages(history: list[dict]) -> list[dict]:
    """Chatbot value -> plain {"role", "content"} messages with the figure lines removed."""
    out = []
    for m in history or []:
        role = m.get("role") if isinstance(m, dict) else None
        if role in ("user", "assistant"):
            out.append({"role": role, "content": strip_figures(text_of(m.get("content")))})
    return out


class ModelHost:
    """The one model the page serves; loading another replaces it for every session."""

    def __init__(self, model: str | None = None, config: EngineConfig = EngineConfig()):
        self.config = config
        self.name = model
        self.engine: Engine | None = None
        self._load_lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}

    def get(self) -> Engine:
        with self._load_lock:
            if self.engine is None:
                self.engine = Engine.load(self.name, self.config)
            return self.engine

    def switch(self, name: str) -> Engine:
        """Load another model (catalog id or path); the old one stays if the new one fails."""
        name = (name or "").strip()
        if not name:
            raise KitError("choose a model from the list or type a path to a .gguf file")
        with self._load_lock:
            new = Engine.load(name, self.config)
            old, self.engine, self.name = self.engine, new, name
        if old is not None:
            old.close()
        return new

    def cancel(self, session: str) -> None:
        event = self._cancel.get(session)
        if event is not None:
            event.set()

    def respond(
        self, history: list[dict], system: str, sampling: Sampling, session: str = ""
    ) -> Iterator[list[dict]]:
        """Answer the last user message of `history`; yields the growing chatbot value."""
        messages = history_messages(history)
        if not messages or messages[-1]["role"] != "user":
            raise KitError("empty question: type a question first")
        if system.strip():
            messages.insert(0, {"role": "system", "content": system.strip()})
        engine = self.get()
        event = self._cancel[session] = threading.Event()
        shown = list(history) + [{"role": "assistant", "content": ""}]
        answer, last = "", 0.0
        try:
            for item in engine.stream(messages, sampling, event):
                if isinstance(item, Stats):
                    shown[-1] = {"role": "assistant", "content": with_figures(answer, item)}
                    yield shown
                    continue
                answer += item
                now = time.monotonic()
                if now - last >= STREAM_INTERVAL_S:  # the first piece always goes out at once
                    last = now
                    shown[-1] = {"role": "assistant", "content": answer}
                    yield shown
        finally:
            if self._cancel.get(session) is event:
                del self._cancel[session]


def present_models() -> list[str]:
    """Catalog ids whose files are on this device (the page's model picker)."""
    return [e.id for e in catalog().values() if e.local_path() is not None]


def last_exchange(history: list[dict], index: int | None = None) -> tuple[str, str]:
    """The answer at `index` (default: the last one) and the question before it."""
    msgs = history_messages(history)
    if index is None:
        index = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    if not 0 <= index < len(msgs) or msgs[index]["role"] != "assistant":
        raise KitError("nothing to rate: ask a question and wait for its answer first")
    question = next((m["content"] for m in reversed(msgs[:index]) if m["role"] == "user"), "")
    return question, msgs[index]["content"]


def rate(history, model: str, settings: dict, *, index: int | None = None, path=None, **rating) -> Path:
    """Append a rating of one answer (thumbs, score, verdict, comment, model_sha256) to the ratings file."""
    question, answer = last_exchange(history, index)
    record = ratings.make_record(question, answer, model, settings, **rating)
    return ratings.append(record, path)


def export(
    history: list[dict], system: str, model: str, settings: dict, folder: str | None = None
) -> tuple[Path, Path]:
    """Write the conversation as Markdown and JSON files; returns both paths."""
    msgs = history_messages(history)
    if not msgs:
        raise KitError("nothing to export yet: the conversation is empty")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(folder or tempfile.mkdtemp(prefix="research-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    md = [f"# Conversation with {model}", "", f"*{stamp} · settings: {json.dumps(settings)}*", ""]
    if system.strip():
        md += ["**System:** " + system.strip(), ""]
    for m in msgs:
        md += [f"**{'You' if m['role'] == 'user' else 'Model'}:** {m['content']}", ""]
    md_path = folder / f"conversation-{stamp}.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    json_path = folder / f"conversation-{stamp}.json"
    doc = {"model": model, "time": stamp, "system": system, "settings": settings, "messages": msgs}
    json_path.write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return md_path, json_path


def sampling_from(temperature, top_k, top_p, min_p, repeat_penalty, max_tokens, seed) -> Sampling:
    """Sampling from the page's controls; a seed of -1 or empty means random."""
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


def settings_dict(sampling: Sampling) -> dict:
    return dataclasses.asdict(sampling)


def model_label(name: str | None) -> str:
    try:
        return resolve(name).id
    except KitError:
        return str(name)

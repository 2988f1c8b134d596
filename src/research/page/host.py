"""The chat logic behind the page: one shared model, per-session stop, history, ratings, export.

The page (demo/app.py) only lays out components and wires them to these functions, so the
same logic is tested without a browser.

Every answer is known by an id from the moment it is generated, and the kit keeps what produced
it (model, file hash, prompt format, system prompt, sampling: research.engine.provenance) under that
id, so a rating or an export names the model that gave the answer even after another session
loaded another model or a slider moved. Text shown on the page is hostile content (a question, a
model's answer, a file name): research.page.text shows it as text, never as HTML.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from research import confidence
from research.engine import Engine, EngineConfig, Sampling, Stats, provenance
from research.errors import KitError
from research.models.catalog import catalog, models_dir
from research.page import export, idle
from research.page import sources as page_sources
from research.page import text as page_text
from research.page.messages import (  # noqa: F401 (the page reads them here too)
    CHECKING,
    DEFAULT_SYSTEM,
    KNOBS,
    LOOKUP,
    NO_LIBRARY,
    NOT_SURE,
    REMEMBERED_ANSWERS,
    SOURCES_HEAD,
    STREAM_CHARS,
    STREAM_INTERVAL_S,
    _assistant_message,
    answer_id_of,
    answer_text,
    history_messages,
    model_label,
    present_models,
    sampling_from,
    settings_dict,
    stream_interval,
    strip_sources,
    text_of,
    with_figures,
)
from research.ratings import store as ratings


class ModelHost:
    """The one model the page serves; loading another replaces it for every session.

    `folders`: where the page's loader may open model files, besides the catalog and the
    downloads folder (the folders named when starting the page, and the start model's own).

    Every call into llama.cpp (load, answer, close) runs on the host's one llama.cpp thread.
    llama.cpp's CPU threads are an OpenMP team belonging to the thread that calls it, and while
    two calling threads are alive libgomp counts more threads than cores and stops spinning at
    its barriers: the bundled model on 2 threads decoded at 48-62 t/s from a second Python
    thread against 86-87 from the first (and 82-92 from one thread alone). Gradio runs each answer
    on whichever worker thread is free, so the page fell to that speed a few answers in.
    """

    def __init__(
        self,
        model: str | None = None,
        config: EngineConfig = EngineConfig(),
        folders: Sequence = (),
        unload_after_s: float | None = None,
    ):
        self.config = config
        self.name = model
        self.folders = [Path(f).expanduser().resolve() for f in folders]
        self.engine: Engine | None = None
        # Give the model's memory back after this many idle seconds (None: keep it loaded).
        self.unload_after_s = unload_after_s
        self.unloaded = False  # the model was unloaded for being idle; the next question reloads it
        self._active = 0  # answers in progress
        self._timer: threading.Timer | None = None
        self._load_lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._answers: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._answers_lock = threading.Lock()
        # "Answer only when sure", per page session: the threshold below which an answer is
        # withheld (confidence.SURE), absent when the session has not turned it on.
        self._sure: dict[str, float] = {}
        self._libraries: dict[str, tuple[str, str]] = {}  # session -> (library, lookup mode)
        self._llama_ident: int | None = None
        self._llama = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="llama.cpp", initializer=self._is_llama_thread
        )

    def _is_llama_thread(self) -> None:
        self._llama_ident = threading.get_ident()

    def on_llama(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on the host's llama.cpp thread (see the class doc), its result here."""
        if threading.get_ident() == self._llama_ident:
            return fn(*args, **kwargs)
        return self._llama.submit(fn, *args, **kwargs).result()

    def stream(self, engine: Engine, messages, sampling: Sampling, cancel: threading.Event) -> Iterator:
        """engine.stream on the llama.cpp thread, its pieces handed over as they come: decoding
        goes on while the page sends what it has. Closing this early stops the answer."""
        pieces: queue.SimpleQueue = queue.SimpleQueue()
        done = object()

        def produce():
            try:
                for item in engine.stream(messages, sampling, cancel):
                    pieces.put(item)
            except BaseException as e:  # handed over and raised on the page's side
                pieces.put(_Failed(e))
            finally:
                pieces.put(done)

        future = self._llama.submit(produce)
        finished = False
        try:
            while (item := pieces.get()) is not done:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
            finished = True
        finally:
            if not finished:
                cancel.set()  # nobody reads the rest: stop decoding it
            future.result()

    def get(self) -> Engine:
        with self._load_lock:
            if self.engine is None:
                self.engine = self.on_llama(Engine.load, self.name, self.config)
                self.unloaded = False
            return self.engine

    def idle_soon(self) -> None:
        """(Re)start the idle clock: with unload_after_s set, the model goes after that long.

        A timer thread that sleeps until then, not a poll: at rest nothing wakes up.
        """
        if self.unload_after_s is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.unload_after_s, self.unload_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def unload_if_idle(self) -> bool:
        """Close the model if no answer is running; True when it was unloaded."""
        with self._load_lock:
            if self.engine is None or self._active:
                return False
            engine, self.engine, self.unloaded = self.engine, None, True
        self.on_llama(engine.close)
        idle.give_back_memory()
        minutes = (self.unload_after_s or 0) / 60
        print(
            f"model {engine.model_id} unloaded after {minutes:g} min idle; the next question reloads it",
            file=sys.stderr,
            flush=True,
        )
        return True

    def allowed_folders(self) -> list[Path]:
        return [models_dir().resolve(), *self.folders]

    def check_allowed(self, name: str) -> None:
        """KitError unless `name` is a catalog id or a file inside an allowed folder.

        The page's loader is reachable by anyone who can open the page; it must not become a way
        to make the kit open, and describe, any file of the device.
        """
        if name in catalog():
            return
        path = Path(name).expanduser()
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            real = path
        if not any(real.is_relative_to(folder) for folder in self.allowed_folders()):
            folders = ", ".join(str(f) for f in self.allowed_folders())
            raise KitError(
                f"the page opens model files only from {folders}; put the file there, or start the page "
                "with --models-dir FOLDER"
            )

    def switch(self, name: str) -> Engine:
        """Load another model (catalog id or path); the old one stays if the new one fails."""
        name = (name or "").strip()
        if not name:
            raise KitError("choose a model from the list or type a path to a .gguf file")
        self.check_allowed(name)
        with self._load_lock:
            new = self.on_llama(Engine.load, name, self.config)
            old, self.engine, self.name = self.engine, new, name
        if old is not None:
            self.on_llama(old.close)
        return new

    def cancel(self, session: str) -> None:
        event = self._cancel.get(session)
        if event is not None:
            event.set()

    def _remember(self, answer_id: str, record: dict) -> None:
        with self._answers_lock:
            self._answers[answer_id] = record
            while len(self._answers) > REMEMBERED_ANSWERS:
                self._answers.popitem(last=False)

    def answer_record(self, message: dict) -> dict:
        """What produced an answer on the page: its provenance, question and text.

        KitError when the page does not know the answer (it was edited, or given before the page
        restarted), so a rating is never attributed to a model that did not give the answer.
        """
        answer_id = answer_id_of(message)
        with self._answers_lock:
            record = self._answers.get(answer_id) if answer_id else None
        text = answer_text(message.get("content"))
        if record is None:
            raise KitError(
                "the page does not know which model gave this answer (it was given before the page "
                "restarted, or edited); ask again to rate it"
            )
        if record.get("withheld") and text.strip() == NOT_SURE:
            raise KitError("this answer was withheld (answer only when sure): show it to rate it")
        if record["answer"].strip() != text.strip():
            raise KitError(
                "this answer was edited after the model gave it; ask again to rate the model's own"
            )
        return record

    def respond(
        self, history: list[dict], system: str, sampling: Sampling, session: str = ""
    ) -> Iterator[list[dict]]:
        """Answer the last user message of `history`; yields the growing chatbot value.

        The answer message carries its id in its metadata from the first piece on, and what
        produced it is fixed before the first token (this engine, this system prompt, these
        settings), whatever happens on the page meanwhile.
        """
        messages = history_messages(history)
        if not messages or messages[-1]["role"] != "user":
            raise KitError("empty question: type a question first")
        system = (system or "").strip()
        if system:
            messages.insert(0, {"role": "system", "content": system})
        with self._load_lock:
            self._active += 1
        try:
            if session in self._libraries:
                yield from self._respond_library(history, messages, system, sampling, session)
                return
            yield from self._respond(history, messages, system, sampling, session)
        finally:
            with self._load_lock:
                self._active -= 1
            self.idle_soon()

    def _respond(self, history, messages, system, sampling, session) -> Iterator[list[dict]]:
        start = time.perf_counter()
        reload = self.engine is None
        engine = self.get()
        load_s = time.perf_counter() - start if reload else 0.0
        answer_id = uuid.uuid4().hex
        question = messages[-1]["content"]
        event = self._cancel[session] = threading.Event()
        meta = {"id": answer_id}
        shown = list(history) + [{"role": "assistant", "content": "", "metadata": meta}]
        answer, last = "", 0.0
        try:
            for item in self.stream(engine, messages, sampling, event):
                if isinstance(item, Stats):
                    item.load_s = load_s
                    # Read while the engine is still this answer's: its format is the one the
                    # prompt was rendered in (a template past a bound switches it to a fallback).
                    prov = provenance.of(engine, system, sampling) | {"answer_id": answer_id}
                    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                    conf = confidence.of_stats(item, engine.sha256)
                    withheld = conf.abstains(self._sure.get(session))
                    full = with_figures(answer, item, conf)
                    self._remember(
                        answer_id,
                        {"question": question, "answer": answer, "provenance": prov, "time": when}
                        | {"stats": item.as_dict(), "confidence": conf.as_dict(), "shown": full}
                        | {"withheld": withheld},
                    )
                    content = with_figures(NOT_SURE, item, conf) if withheld else full
                    shown[-1] = {"role": "assistant", "content": content, "metadata": meta}
                    yield shown
                    continue
                answer += item
                now = time.monotonic()
                if session in self._sure:  # no answer is shown before it is known to be sure enough
                    if not last:
                        last = now
                        shown[-1] = {"role": "assistant", "content": CHECKING, "metadata": meta}
                        yield shown
                    continue
                if now - last >= stream_interval(len(answer)):  # the first piece goes out at once
                    last = now
                    shown[-1] = {"role": "assistant", "content": page_text.shown(answer), "metadata": meta}
                    yield shown
        finally:
            if self._cancel.get(session) is event:
                del self._cancel[session]

    def answer_only_when_sure(self, session: str, on: bool) -> None:
        """Turn "answer only when sure" on or off for one page session."""
        if on:
            self._sure[session] = confidence.SURE
        else:
            self._sure.pop(session, None)

    def withheld(self, history: list[dict], index: int | None = None) -> dict | None:
        """What the page knows of the answer at `index` (default: the last one) when "answer only
        when sure" withheld it and it still reads "I'm not sure." (show_anyway can show it), else None."""
        try:
            message = _assistant_message(history, index)
        except KitError:  # no answer yet
            return None
        answer_id = answer_id_of(message)
        with self._answers_lock:
            record = self._answers.get(answer_id) if answer_id else None
        shows = answer_text(message.get("content")).strip() == NOT_SURE
        return record if record is not None and record.get("withheld") and shows else None

    def show_anyway(self, history: list[dict], index: int | None = None) -> list[dict]:
        """The conversation with the withheld answer at `index` (default: the last answer) shown
        as the model gave it, with its figures; KitError when that answer was not withheld."""
        history = list(history or [])
        record = self.withheld(history, index)
        if record is None:
            raise KitError("the last answer was not withheld: there is nothing more to show")
        message = _assistant_message(history, index)
        i = index if index is not None else history.index(message)
        history[i] = {"role": "assistant", "content": record["shown"], "metadata": message.get("metadata")}
        return history

    # ---- answers from the user's library (research.library.grounded) ----

    def use_library(self, session: str, name: str | None, mode: str = "always") -> str:
        """Answer this session's questions from library `name` (None or "": from the model alone)."""
        from research.library import grounded
        from research.library import store as library

        if not name or name == NO_LIBRARY:
            self._libraries.pop(session, None)
            return "Answers come from the model alone."
        if mode not in grounded.MODES:
            raise KitError(f"unknown lookup mode {mode!r}; choose from: {', '.join(grounded.MODES)}")
        summary = library.open_library(name).summary()
        self._libraries[session] = (name, mode)
        return f"Answers look up {page_text.literal(name)} ({summary['passages']} passages) · {LOOKUP[mode]}"

    def _respond_library(self, history, messages, system, sampling, session) -> Iterator[list[dict]]:
        """The answer grounded in the session's library, its sources listed under it (each a link
        to the page's /passage route) with what the library cost; hostile text stays text."""
        from research.library import grounded

        name, mode = self._libraries[session]
        engine = self.get()
        question = messages[-1]["content"]
        earlier = [m for m in messages[:-1] if m["role"] != "system"]
        # on this session's thread: the search (a ZIM's worker, its budget) never holds the model's
        g = grounded.ground(
            engine,
            name,
            question,
            mode,
            system=system or None,
            history=earlier,
            sampling=sampling,
            run=self.on_llama,
        )

        def block(answer: str) -> str:
            numbers, by = grounded.citations(answer, question, g.sources)
            head = SOURCES_HEAD + page_text.said(" · " + g.figures())  # read as sentences
            listed = page_sources.sources_markdown(name, g.sources, numbers) if g.sources else ""
            return f"{head}\n\n{listed.removeprefix('**Sources**').strip()}" if listed else head

        if g.closed_answer is not None and not g.looked_up:  # "unsure", and sure: the answer stands
            answer_id, stats = uuid.uuid4().hex, g.closed_stats
            prov = provenance.of(engine, system, sampling) | {"answer_id": answer_id}
            when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            record = {"question": question, "answer": g.closed_answer, "provenance": prov, "time": when}
            self._remember(answer_id, record | {"stats": stats.as_dict(), "library": g.as_dict()})
            content = with_figures(g.closed_answer, stats) + block(g.closed_answer)
            yield list(history) + [{"role": "assistant", "content": content, "metadata": {"id": answer_id}}]
            return
        for shown in self._respond(history, g.messages, system, sampling, session):
            last = shown[-1]
            answer = answer_text(last["content"])
            shown[-1] = last | {"content": last["content"] + block(answer)}
            with self._answers_lock:
                record = self._answers.get(last["metadata"]["id"])
            if record is not None:
                record["library"] = g.as_dict()
            yield shown

    def rate(self, history: list[dict], index: int | None = None, path=None, **rating) -> Path:
        """Append a rating of the answer at `index` (default: the last one) to the ratings file.

        The rating names what produced that answer (its provenance), not what is loaded now.
        """
        message = _assistant_message(history, index)
        record = self.answer_record(message)
        rec = ratings.make_record(record["question"], record["answer"], record["provenance"], **rating)
        signals = record.get("stats", {}).get("signals")
        if signals:  # kept with the rating, so ratings recalibrate without recomputing them
            rec["confidence_signals"] = signals
        if record.get("library"):  # the library, its version and the passages the answer came with
            rec["library"] = record["library"]
        return ratings.append(rec, path)

    def export(self, history: list[dict], system: str, folder: str | Path) -> tuple[Path, Path]:
        """Write the conversation as Markdown and JSON into `folder` (research.page.export)."""
        return export.conversation(history, system, folder, self.answer_record)


@dataclasses.dataclass
class _Failed:
    """An exception raised on the llama.cpp thread, to raise again on the page's side."""

    error: BaseException

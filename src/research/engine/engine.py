"""The engine: load a GGUF through llama-cpp-python and stream answers with their figures.

One Engine serves one request at a time (a lock: llama.cpp contexts crash or mix output when
shared, llama-cpp-python issues 1367 and 1529); a conversation is trimmed to fit the context,
oldest turns first, keeping room for the reply.
"""

from __future__ import annotations

import codecs
import functools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

from research import device, energy
from research.engine import memory, options, selftest, signals
from research.engine import templates as template_worker
from research.engine.llama import LlamaBackend
from research.engine.prompt import StopScanner, _Timed, fit_history, prompt_tokens
from research.engine.prompts import ChatFormat, Message, choose_format
from research.engine.types import Backend, EngineConfig, Sampling, Stats
from research.errors import KitError
from research.hashing import cached_sha256
from research.models import vouched as trust
from research.models.catalog import ModelRef, resolve
from research.models.gguf import read_gguf


def prepare(model, config: EngineConfig) -> tuple[ModelRef, object, EngineConfig]:
    """Everything before llama.cpp sees a file: the file named, its header validated, and the
    settings decided (context, mapping, micro-batch) and checked against free memory."""
    ref = model if isinstance(model, ModelRef) else resolve(model)
    info = read_gguf(ref.path)  # validates the whole header before llama.cpp sees the file
    if info.context_length and info.context_length < options.CTX.lo:
        raise KitError(
            f"{ref.path.name} was trained for a context of {info.context_length} tokens; the kit needs "
            f"at least {options.CTX.lo} (a chat prompt and room for an answer)"
        )
    plan = memory.plan(
        info, config.n_ctx, use_mmap=config.use_mmap, n_ubatch=config.n_ubatch, n_batch=config.n_batch
    )
    memory.check_fits(
        memory.estimate(info, plan.n_ctx, config.kv_type, n_ubatch=plan.n_ubatch, mapped=plan.mapped),
        f"model {ref.id} at a {plan.n_ctx}-token context",
    )
    config = replace(config, n_ctx=plan.n_ctx, use_mmap=plan.mapped, n_ubatch=plan.n_ubatch)
    return ref, info, config


class Engine:
    """A loaded model that answers one conversation at a time, streaming text pieces."""

    def __init__(
        self,
        backend: Backend,
        fmt: ChatFormat,
        model_id: str,
        info=None,
        warning: str | None = None,
        ref: ModelRef | None = None,
    ):
        self.backend, self.format, self.model_id, self.info, self.ref = backend, fmt, model_id, info, ref
        self.warning = warning  # a message for the user about how the model was set up
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, model: str | os.PathLike | ModelRef | None = None, config: EngineConfig = EngineConfig()
    ) -> Engine:
        """Check and load a model named by catalog id or path; KitError on anything wrong."""
        ref, info, config = prepare(model, config)
        # A child first does a short answer's work: once per engine build, CPU and kind of model
        # (an engine that crashes here ends the child, not us), and at every load of a file the
        # kit cannot vouch for (a hostile file crashes the child, not us).
        tested = selftest.ensure(ref.path, info, config, trusted=trust.trusted(ref))
        if info.chat_template and config.chat_format in (None, "template"):
            template_worker.prestart()  # its start (~0.1 s) overlaps the model's load
        backend = LlamaBackend(str(ref.path), config, extra_bufts=tested.extra_bufts)
        requested = config.chat_format or (None if info.chat_template else ref.prompt_format)
        # A file with no chat template that the catalog names no format for is a base model:
        # it is asked in a question-answer completion format, not a chat format it would echo.
        fmt, warning = choose_format(
            requested,
            info.chat_template,
            bos_token=backend.bos_text,
            eos_token=backend.eos_text,
            fallback=ref.prompt_format or ("chatml" if info.chat_template else "qa"),
        )
        warning = "; ".join(w for w in (tested.warning, warning) if w) or None
        return cls(backend, fmt, ref.id, info, warning, ref)

    @functools.cached_property
    def sha256(self) -> str:
        """SHA-256 of the model file, recorded beside ratings and results.

        Computed from the file itself (never copied from the catalog, which a package update
        could leave behind), and cached by path, size and modification time, so the bundled
        model's hash costs 0.3 s once, not at every start.
        """
        return cached_sha256(self.ref.path) if self.ref else ""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as content (control-token texts in it count as the characters they are)."""
        return len(self.backend.tokenize(text, special=False, bos=False))

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        """The prompt of `messages` in this model's format, contents as text (prompt_tokens)."""
        return prompt_tokens(self.format, messages, self.backend)

    def stream(
        self,
        messages: Sequence[Message],
        sampling: Sampling = Sampling(),
        cancel: threading.Event | None = None,
    ) -> Iterator[str | Stats]:
        """Yield the answer's text pieces, then its Stats. Waits while another answer runs."""
        if not messages or messages[-1]["role"] != "user" or not str(messages[-1]["content"]).strip():
            raise KitError("empty question: type a question first")
        self._lock.acquire()
        try:
            yield from self._stream_locked(messages, sampling, cancel or threading.Event())
        finally:
            if hasattr(self.backend, "watch"):  # for this answer only: not P(True)'s nor a forced one
                self.backend.watch = None
            self._lock.release()

    def _stream_locked(self, messages, sampling: Sampling, cancel: threading.Event) -> Iterator[str | Stats]:
        b = self.backend
        t0 = time.perf_counter()
        cost = energy.Span().__enter__()
        timed = _Timed(self.format, b)
        before = self.format.name
        tokens, max_new, dropped = fit_history(messages, timed.prompt, b.n_ctx, sampling.max_tokens)
        stats = Stats(
            self.model_id,
            len(tokens),
            len(tokens) - b.cached_prefix(tokens),
            trimmed_turns=dropped,
            n_threads=b.n_threads,
            n_ctx=b.n_ctx,
            prompt_format=self.format.name,
            warning=self.format.warning if self.format.name != before else None,
        )
        question = str(messages[-1]["content"])
        self._watch(tokens, messages, question)
        device.reset_peak_rss()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Benchmarks generate a fixed number of tokens as llama-bench does: a model that ends its
        # text early (a base model) must not stop at its end-of-text token nor at its text.
        scanner = StopScanner(() if sampling.ignore_eos else self.format.stops)
        started = False  # leading whitespace of an answer is dropped
        t_first = t_last = t0
        sampled = 0  # tokens sampled, the end-of-generation token included: decode steps + 1
        pieces: list[bytes] = []  # each answer token's bytes, for the confidence signals
        shown: list[str] = []  # the answer's text as streamed, for the signals of its words
        for token in b.generate(tokens, sampling):
            t_last = time.perf_counter()
            sampled += 1
            if sampled == 1:
                t_first = t_last
            if b.is_eog(token) and not sampling.ignore_eos:
                break
            stats.completion_tokens += 1
            pieces.append(b.token_bytes(token))
            text = scanner.feed(decoder.decode(pieces[-1]))
            if not started:
                text = text.lstrip()
                started = bool(text)
            if text:
                shown.append(text)
                yield text
            if scanner.stopped:
                break
            if cancel.is_set():
                stats.stop_reason = "cancelled"
                break
            if stats.completion_tokens >= max_new:
                stats.stop_reason = "length"
                break
        if not scanner.stopped:
            tail = scanner.flush() + decoder.decode(b"", final=True)
            if tail and (started or tail.strip()):
                shown.append(tail if started else tail.lstrip())
                yield shown[-1]
        stats.ttft_s = t_first - t0
        stats.format_s, stats.tokenize_s = timed.format_s, timed.tokenize_s
        stats.prompt_eval_s = b.prompt_eval_s
        stats.first_sample_s = b.first_sample_s
        stats.total_s = time.perf_counter() - t0
        stats.prompt_tps = stats.prompt_eval_tokens / stats.ttft_s if stats.ttft_s > 0 else 0.0
        decode_s = t_last - t_first
        stats.decode_tps = (sampled - 1) / decode_s if decode_s > 0 else 0.0
        stats.peak_rss_mb = device.peak_rss_mb()
        stats.step_parts = {"steps": sampled - 1, "wall_s": decode_s, **self._step_parts()}
        trace = b.trace
        if trace:
            # The token that completed a stop string is not part of the answer shown.
            n = len(pieces) - (1 if scanner.stopped and len(pieces) > 1 else 0)
            texts = [p.decode("utf-8", "replace") for p in pieces[:n]]
            stats.signals = signals.token_signals(trace[:n], texts, question, "".join(shown))
            stats.signal_s = b.signal_s
            if getattr(b, "watch", None) and stats.signals:
                self._add_question_signals(tokens, stats)
        cost.stop()
        stats.cpu_s, stats.energy_j = cost.cpu_s, cost.energy_j
        yield stats

    def _watch(self, tokens: Sequence[int], messages: Sequence[Message], question: str) -> None:
        """Point the backend (one that can read them) at the question's prompt tokens for the
        question-side signals. The first question of a conversation only: after others, its words
        are predictable from them, unlike any question the calibrations saw (each asked alone)."""
        b = self.backend
        if hasattr(b, "watch"):
            first = sum(m["role"] == "user" for m in messages) == 1
            b.watch = signals.question_span(tokens, question, b.token_bytes) if first else None

    def _step_parts(self) -> dict:
        """The backend's seconds in llama_decode, its sampler chain and the free signals over the
        last answer's decode steps (Stats.step_parts)."""
        b = self.backend
        return {"decode_s": b.decode_s, "sample_s": b.sample_s, "signal_s": b.signal_s}

    def _add_question_signals(self, tokens: Sequence[int], stats: Stats) -> None:
        """The question-side signals the backend read while evaluating the prompt, into `stats`."""
        b = self.backend
        start, end = b.watch
        asked = [b.token_bytes(t).decode("utf-8", "replace") for t in tokens[start:end]]
        stats.signals |= signals.question_signals(b.question_trace, asked) or {}
        stats.signal_s += b.question_s

    def answer(self, messages: Sequence[Message], sampling: Sampling = Sampling()) -> tuple[str, Stats]:
        """The whole answer and its Stats (no streaming)."""
        pieces: list[str] = []
        stats = None
        for item in self.stream(messages, sampling):
            if isinstance(item, Stats):
                stats = item
            else:
                pieces.append(item)
        return "".join(pieces), stats

    def reset(self) -> None:
        """Forget the cached conversation: the next answer depends on its messages alone."""
        with self._lock:
            self.backend.reset()

    def close(self) -> None:
        with self._lock:
            self.backend.close()

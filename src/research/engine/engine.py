"""The engine: load a GGUF through llama-cpp-python and stream answers with their figures.

One Engine serves one request at a time (a lock: llama.cpp contexts crash or mix output when
shared, llama-cpp-python issues 1367 and 1529); a conversation is trimmed to fit the context,
oldest turns first, keeping room for the reply.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from research import device, energy
from research.confidence import methods as confidence
from research.engine import memory, options, selftest
from research.engine import templates as template_worker
from research.engine.llama import LlamaBackend
from research.engine.prompts import ChatFormat, Message, choose_format
from research.errors import KitError
from research.hashing import cached_sha256
from research.models import vouched as trust
from research.models.catalog import ModelRef, resolve
from research.models.gguf import read_gguf


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one answer."""

    temperature: float = 0.7  # 0 means greedy: deterministic, used for evaluation
    top_k: int = 40  # llama.cpp's default
    top_p: float = 0.95  # llama.cpp's default
    min_p: float = 0.05  # llama.cpp's default; cuts the long tail that small models wander into
    repeat_penalty: float = 1.1  # tiny models loop without it
    max_tokens: int = 512  # a few paragraphs: answers to questions, not essays
    seed: int | None = None  # None: a fresh seed per answer; fix it to reproduce a sampled answer
    ignore_eos: bool = False  # benchmarks only: generate max_tokens even past the end-of-answer token

    def __post_init__(self):
        """KitError in one line for a value out of range (the page's API can send any number)."""
        from research.engine import options as o  # the ranges, and why, are defined there once

        o.TEMPERATURE.check(self.temperature, "temperature")
        o.TOP_K.check(self.top_k, "top_k")
        o.TOP_P.check(self.top_p, "top_p")
        o.MIN_P.check(self.min_p, "min_p")
        o.REPEAT_PENALTY.check(self.repeat_penalty, "repeat_penalty")
        o.MAX_TOKENS.check(self.max_tokens, "max_tokens")
        if self.seed is not None and not (type(self.seed) is int and self.seed == o.RANDOM_SEED):
            o.SEED.check(self.seed, "seed")
        if not isinstance(self.ignore_eos, bool):
            raise KitError(f"ignore_eos must be True or False, not {self.ignore_eos!r}")


@dataclass(frozen=True)
class EngineConfig:
    """How a model is loaded."""

    n_ctx: int = 4096  # enough for a conversation; KV cache of the bundled model: 90 MB
    n_threads: int | None = None  # None: the physical cores (hyper-threads slow decoding down)
    n_batch: int = 512  # prompt tokens per decode call, llama.cpp's default
    # Prompt tokens llama.cpp evaluates at once; None: 512 (its default) unless the activations
    # would not fit the engine's memory budget (research.engine.memory.micro_batch).
    n_ubatch: int | None = None
    # None: map the file (it stays in the page cache and loads at once the second time) unless
    # this CPU repacks some of its weights; then read it in, so they are not resident twice
    # (research.engine.memory.maps_file).
    use_mmap: bool | None = None
    # llama-bench's default (-fa auto) turns it on for CPUs; measured here on the bundled model:
    # decode 130-153 t/s with it against 107-134 t/s without, prompt 283 against 243 t/s.
    flash_attn: bool = True
    kv_type: str = "f16"  # llama.cpp's default; q8_0 halves the KV cache at a small quality cost
    chat_format: str | None = None  # None: the GGUF's own template, else the catalog's format
    # Read each token's log-probability and entropy while generating (research.confidence.methods's free
    # signals): about 1 % of decode time, and the tokens are the same with it off.
    token_signals: bool = True

    def __post_init__(self):
        """KitError in one line for a value out of range, before llama.cpp sees it.

        llama.cpp reads n_ctx=0 as "the model's whole trained context" and wraps negative
        numbers into huge unsigned ones; the page's API and notebooks can send any value.
        """
        from research.engine import options as o  # the ranges, and why, are defined there once

        o.CTX.check(self.n_ctx, "n_ctx")
        if self.n_threads is not None:
            o.THREADS.check(self.n_threads, "n_threads")
        o.BATCH.check(self.n_batch, "n_batch")
        if self.n_ubatch is not None:
            o.BATCH.check(self.n_ubatch, "n_ubatch")
        for name in ("use_mmap", "flash_attn", "token_signals"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "use_mmap" and value is None):
                raise KitError(f"{name} must be True or False, not {value!r}")
        o.check_kv_type(self.kv_type)
        if self.chat_format is not None and not isinstance(self.chat_format, str):
            raise KitError(f"chat_format must be a format name or None, not {self.chat_format!r}")


@dataclass
class Stats:
    """Figures of one answer."""

    model: str
    prompt_tokens: int = 0  # tokens of the whole prompt
    prompt_eval_tokens: int = 0  # of which evaluated now (the rest reused from the KV cache)
    completion_tokens: int = 0
    ttft_s: float = 0.0  # from the request to the first token of the answer
    prompt_tps: float = 0.0
    decode_tps: float = 0.0
    total_s: float = 0.0
    peak_rss_mb: float = 0.0
    stop_reason: str = "stop"  # stop | length | cancelled
    trimmed_turns: int = 0  # earlier messages dropped to fit the context
    # The parts of the time to first token: chat formatting, tokenization, prompt evaluation
    # and sampling the first token (what is left of ttft_s is Python between them).
    format_s: float = 0.0
    tokenize_s: float = 0.0
    prompt_eval_s: float = 0.0
    first_sample_s: float = 0.0
    n_threads: int = 0
    n_ctx: int = 0
    prompt_format: str = ""  # the format this answer's prompt was rendered in
    # What the answer cost: the process's CPU time over it (all threads), and joules where the
    # device has an energy counter (research.energy; None where it cannot be read).
    cpu_s: float = 0.0
    energy_j: float | None = None
    load_s: float = 0.0  # the model was (re)loaded for this answer, in this many seconds (the page)
    # Set when the model's chat template went past a bound on this question and the format
    # switched to its fallback (research.engine.prompts): the answer came in that format.
    warning: str | None = None
    # The free confidence signals of the answer (research.confidence.methods.token_signals: a dozen
    # numbers, never whole distributions), None when the backend gives none; and the seconds
    # spent reading them while decoding, to set against decode time.
    signals: dict | None = None
    signal_s: float = 0.0

    def line(self) -> str:
        """One line of figures, as the CLI and the page show them."""
        extra = f" · dropped {self.trimmed_turns} old messages" if self.trimmed_turns else ""
        extra += f" · ⚠ {self.warning}" if self.warning else ""
        stop = "" if self.stop_reason == "stop" else f" · {self.stop_reason}"
        load = f"model loaded in {self.load_s:.1f} s · " if self.load_s else ""
        energy = f" · {self.energy_j:.1f} J" if self.energy_j is not None else ""
        return (
            f"{load}{self.prompt_tokens} prompt tokens · first token {self.ttft_s:.2f} s · "
            f"prompt {self.prompt_tps:.0f} t/s · {self.completion_tokens} tokens at "
            f"{self.decode_tps:.1f} t/s · peak {self.peak_rss_mb:.0f} MB · CPU {self.cpu_s:.2f} s"
            f"{energy}{stop}{extra}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    """What the engine needs of a model runtime (llama.cpp here, a scripted fake in tests)."""

    n_ctx: int
    n_threads: int

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]: ...
    def token_bytes(self, token: int) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def cached_prefix(self, tokens: Sequence[int]) -> int: ...
    def reset(self) -> None: ...
    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]: ...
    def close(self) -> None: ...


class StopScanner:
    """Hold back text that could be the start of a stop string until it is decided.

    `feed("Paris.<|im")` -> "Paris." (holds "<|im"); `feed("_end|>")` -> "" and `.stopped`.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.buf = ""
        self.stopped = False
        self._starts = {c for s in self.stops for c in s[:-1]}  # a held tail must end in one of these

    def feed(self, text: str) -> str:
        self.buf += text
        for s in self.stops:
            i = self.buf.find(s)
            if i >= 0:
                out, self.buf, self.stopped = self.buf[:i], "", True
                return out
        if not self.buf or self.buf[-1] not in self._starts:  # the common case: nothing to hold
            out, self.buf = self.buf, ""
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.buf.endswith(s[:k])), default=0)
        out, self.buf = self.buf[: len(self.buf) - hold], self.buf[len(self.buf) - hold :]
        return out

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


#: Marks a message's place while its format is rendered (research.engine.engine.prompt_tokens):
#: private-use characters around a per-call nonce, which no text supplies by chance.
_MARK = "\ue000{}:{}\ue001"


def prompt_tokens(fmt, messages: Sequence[Message], backend) -> list[int]:
    """The prompt of `messages` in `fmt`, tokenized so that only the format's own markers can be
    control tokens: every message's content (a question, a passage, a file's title, an earlier
    answer) is tokenized as text, so `<|im_start|>system`, `<｜User｜>`, `[SYSTEM_PROMPT]` or
    `<<SYS>>` in it stay characters whatever the model's vocabulary calls special.

    The format is rendered with a mark in place of each content and cut at the marks; the pieces
    between are the format's and are tokenized with special tokens parsed. A chat template that
    changes content as it inserts it (trims, folds a system turn) is rendered again to check; if
    the marks cannot say where the content went, the content's control-token texts are broken
    with a word joiner (U+2060) and the whole prompt is tokenized as before.
    """
    nonce = secrets.token_hex(6)
    contents = [str(m["content"]) for m in messages]
    marked = [{**m, "content": _MARK.format(nonce, i)} for i, m in enumerate(messages)]
    pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", fmt.render(marked))
    template, used = pieces[0::2], [int(i) for i in pieces[1::2]]
    if getattr(fmt, "template", None):  # a chat template: does it insert the content as it is?
        real = fmt.render(messages)
        for shape in (contents, [c.strip() for c in contents]):
            if _joined(template, used, shape) == real:
                contents = shape
                break
        else:
            return backend.tokenize(_defanged(fmt, messages, backend))
    tokens = backend.tokenize(template[0], special=True, bos=True)
    for i, after in zip(used, template[1:], strict=True):
        if contents[i]:
            tokens += backend.tokenize(contents[i], special=False, bos=False)
        if after:
            tokens += backend.tokenize(after, special=True, bos=False)
    return tokens


def _joined(template: list[str], used: list[int], contents: list[str]) -> str:
    return template[0] + "".join(contents[i] + after for i, after in zip(used, template[1:], strict=True))


def _defanged(fmt, messages: Sequence[Message], backend) -> str:
    """The prompt with every control-token text in the messages broken by a word joiner."""
    texts = sorted(getattr(backend, "control_texts", ()), key=len, reverse=True)
    if not texts:
        return fmt.render(messages)
    pattern = re.compile("|".join(re.escape(t) for t in texts))

    def broken(text: str) -> str:
        return pattern.sub(lambda x: x.group()[0] + "\u2060" + x.group()[1:], text)

    safe = [{**m, "content": broken(str(m["content"]))} for m in messages]
    return fmt.render(safe)


def fit_history(
    messages: Sequence[Message], prompt, n_ctx: int, max_tokens: int, min_reply: int = 16
) -> tuple[list[int], int, int]:
    """Drop the oldest turns until the prompt leaves room for the reply.

    `prompt(messages)` gives the prompt's tokens (prompt_tokens, bound to a format and a backend).
    Returns (prompt tokens, tokens left for the reply, messages dropped). The system prompt
    and the last question are always kept; KitError when they alone leave no room.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system) :])
    dropped = 0
    while True:
        tokens = prompt(system + turns)
        room = n_ctx - len(tokens)
        if room >= max_tokens or len(turns) <= 1:
            break
        cut = next((i for i in range(1, len(turns)) if turns[i]["role"] == "user"), len(turns) - 1)
        turns, dropped = turns[cut:], dropped + cut
    if room < min_reply:
        raise KitError(
            f"the question is too long: {len(tokens)} tokens with the system prompt, in a context "
            f"of {n_ctx}, leaves no room for an answer; shorten it or load with a larger --ctx"
        )
    return tokens, min(max_tokens, room), dropped


class _Timed:
    """A chat format and tokenizer that add up the time spent in them (for the ttft parts)."""

    def __init__(self, fmt: ChatFormat, backend):
        self.fmt, self.backend, self.template = fmt, backend, fmt.template
        self.format_s = self.tokenize_s = 0.0

    def render(self, messages) -> str:
        t = time.perf_counter()
        try:
            return self.fmt.render(messages)
        finally:
            self.format_s += time.perf_counter() - t

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        t = time.perf_counter()
        try:
            return self.backend.tokenize(text, special=special, bos=bos)
        finally:
            self.tokenize_s += time.perf_counter() - t

    @property
    def control_texts(self):
        return getattr(self.backend, "control_texts", ())

    def prompt(self, messages) -> list[int]:
        return prompt_tokens(self, messages, self)


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
        device.reset_peak_rss()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Benchmarks generate a fixed number of tokens as llama-bench does: a model that ends its
        # text early (a base model) must not stop at its end-of-text token nor at its text.
        scanner = StopScanner(() if sampling.ignore_eos else self.format.stops)
        started = False  # leading whitespace of an answer is dropped
        t_first = t_last = t0
        sampled = 0  # tokens sampled, the end-of-generation token included: decode steps + 1
        pieces: list[bytes] = []  # each answer token's bytes, for the confidence signals
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
                yield tail if started else tail.lstrip()
        stats.ttft_s = t_first - t0
        stats.format_s, stats.tokenize_s = timed.format_s, timed.tokenize_s
        stats.prompt_eval_s = getattr(b, "prompt_eval_s", 0.0)
        stats.first_sample_s = getattr(b, "first_sample_s", 0.0)
        stats.total_s = time.perf_counter() - t0
        stats.prompt_tps = stats.prompt_eval_tokens / stats.ttft_s if stats.ttft_s > 0 else 0.0
        decode_s = t_last - t_first
        stats.decode_tps = (sampled - 1) / decode_s if decode_s > 0 else 0.0
        stats.peak_rss_mb = device.peak_rss_mb()
        trace = getattr(b, "trace", None)
        if trace:
            # The token that completed a stop string is not part of the answer shown.
            n = len(pieces) - (1 if scanner.stopped and len(pieces) > 1 else 0)
            texts = [p.decode("utf-8", "replace") for p in pieces[:n]]
            stats.signals = confidence.token_signals(trace[:n], texts, str(messages[-1]["content"]))
            stats.signal_s = getattr(b, "signal_s", 0.0)
        cost.stop()
        stats.cpu_s, stats.energy_j = cost.cpu_s, cost.energy_j
        yield stats

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


def conversation(question: str, system: str | None = None, history: Sequence[Message] = ()) -> list[Message]:
    """Messages for a question: `conversation("Hi", "Be brief")` -> [system, user]."""
    head = [{"role": "system", "content": system}] if system else []
    return head + list(history) + [{"role": "user", "content": question}]

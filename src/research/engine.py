"""The engine: load a GGUF through llama-cpp-python and stream answers with their figures.

One Engine serves one request at a time (a lock: llama.cpp contexts crash or mix output when
shared, llama-cpp-python issues 1367 and 1529); a conversation is trimmed to fit the context,
oldest turns first, keeping room for the reply.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from research import energy, memory, options, template_worker
from research.errors import KitError
from research.gguf_info import read_gguf
from research.hashing import cached_sha256
from research.models import ModelRef, resolve
from research.prompts import ChatFormat, Message, choose_format


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
        from research import options as o  # the ranges, and why, are defined there once

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
    # would not fit the engine's memory budget (research.memory.micro_batch).
    n_ubatch: int | None = None
    # None: map the file (it stays in the page cache and loads at once the second time) unless
    # this CPU repacks some of its weights; then read it in, so they are not resident twice
    # (research.memory.maps_file).
    use_mmap: bool | None = None
    # llama-bench's default (-fa auto) turns it on for CPUs; measured here on the bundled model:
    # decode 130-153 t/s with it against 107-134 t/s without, prompt 283 against 243 t/s.
    flash_attn: bool = True
    kv_type: str = "f16"  # llama.cpp's default; q8_0 halves the KV cache at a small quality cost
    chat_format: str | None = None  # None: the GGUF's own template, else the catalog's format

    def __post_init__(self):
        """KitError in one line for a value out of range, before llama.cpp sees it.

        llama.cpp reads n_ctx=0 as "the model's whole trained context" and wraps negative
        numbers into huge unsigned ones; the page's API and notebooks can send any value.
        """
        from research import options as o  # the ranges, and why, are defined there once

        o.CTX.check(self.n_ctx, "n_ctx")
        if self.n_threads is not None:
            o.THREADS.check(self.n_threads, "n_threads")
        o.BATCH.check(self.n_batch, "n_batch")
        if self.n_ubatch is not None:
            o.BATCH.check(self.n_ubatch, "n_ubatch")
        for name in ("use_mmap", "flash_attn"):
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
    # switched to its fallback (research.prompts): the answer came in that format.
    warning: str | None = None

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

    def tokenize(self, text: str) -> list[int]: ...
    def token_bytes(self, token: int) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def cached_prefix(self, tokens: Sequence[int]) -> int: ...
    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]: ...
    def close(self) -> None: ...


#: Run in a child process to try a model file before this process loads it.
PROBE = """
import sys
from research.engine import EngineConfig, LlamaBackend
from research.errors import KitError
try:
    mapped = sys.argv[3] == "mmap"
    b = LlamaBackend(sys.argv[1], EngineConfig(n_ctx=int(sys.argv[2]), n_threads=1, use_mmap=mapped))
    b.llm.eval(b.tokenize("Hi")[:4] or [0])
except KitError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
"""


def trusted(ref: ModelRef) -> bool:
    """Files the kit can vouch for: the bundled model and catalog downloads of the right size."""
    entry = ref.entry
    if entry is None:
        return False
    if entry.bundled:  # the package's own file, not any file of the same name
        return ref.path.resolve() == (entry.local_path() or Path("/nonexistent")).resolve()
    from research.models import models_dir

    return ref.path.parent == models_dir().resolve() and entry.size == ref.path.stat().st_size


def probe_load(path, n_ctx: int, timeout: float = 600, code: str = PROBE, mapped: bool = True) -> None:
    """Load `path` in a child process first: a crash inside llama.cpp ends the child, not us.

    `mapped`: map the file or read it in, as the real load will.
    """
    import signal
    import subprocess
    import sys

    try:
        r = subprocess.run(
            [sys.executable, "-c", code, str(path), str(n_ctx), "mmap" if mapped else "read"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise KitError(
            f"loading {path} did not finish within {timeout:.0f} s; the file may be hostile"
        ) from None
    if r.returncode == 3:
        raise KitError((r.stderr.strip().splitlines() or ["llama.cpp refused the file"])[-1])
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name
        raise KitError(
            f"llama.cpp crashed ({name}) loading {Path(path).name}: the file is damaged or hostile; "
            "it was tried in a separate process, so nothing else was affected"
        )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise KitError(f"trying {Path(path).name} failed (exit {r.returncode}): {last}")


def default_threads() -> int:
    """Physical cores, at most 8: llama.cpp decodes fastest with one thread per core."""
    import psutil

    return max(1, min(psutil.cpu_count(logical=False) or os.cpu_count() or 1, 8))


class _NoTemplates:
    """Stands in for llama-cpp-python's Jinja2ChatFormatter while a model loads.

    Llama() compiles every chat template in the file; a syntax error there aborts the load, and
    the kit never uses those handlers: it renders templates itself, in its own sandbox.
    """

    def __init__(self, *args, **kwargs):
        pass

    def to_chat_handler(self):
        return None


#: KV-cache type names -> ggml_type ids (ggml.h) for llama.cpp's type_k and type_v.
KV_GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}


_PATCHING = threading.Lock()  # one load at a time may swap llama_cpp's chat formatter

#: llama.cpp's own log lines, kept (not printed: the CLI's output is the kit's) so that a failure
#: can say what llama.cpp said; RESEARCH_LLAMA_LOG=1 prints them to stderr as they come.
LLAMA_LOG: collections.deque[str] = collections.deque(maxlen=200)
_log_callback = None  # the ctypes callback must live as long as llama.cpp may call it


def capture_llama_log() -> None:
    """Route llama.cpp's log (llama_log_set) into LLAMA_LOG instead of stderr; once per process.

    llama-cpp-python prints llama.cpp's error-level lines even with verbose=False, and some
    architectures log warnings at that level on every load: they leaked into `chat --json`'s
    stderr and the CLI's one-line errors.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    echo = os.environ.get("RESEARCH_LLAMA_LOG") == "1"

    @llama_cpp.llama_log_callback
    def keep(level, text, _user_data):
        line = (text or b"").decode("utf-8", "replace")
        if level == 5 and LLAMA_LOG:  # GGML_LOG_LEVEL_CONT: the rest of the previous line
            LLAMA_LOG[-1] += line
        else:
            LLAMA_LOG.append(line)
        if echo:
            sys.stderr.write(line)

    _log_callback = keep
    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))


def last_llama_error() -> str:
    """The last line llama.cpp logged, for an error message ("" when it said nothing)."""
    lines = [line.strip() for line in LLAMA_LOG if line.strip()]
    return lines[-1] if lines else ""


class LlamaBackend:
    """llama-cpp-python's Llama, used token by token through its native sampler chain."""

    PENALTY_LAST_N = 64  # tokens the repeat penalty looks back over (llama-cpp-python's default)

    def __init__(self, path: str, config: EngineConfig):
        import llama_cpp
        from llama_cpp import llama_chat_format

        capture_llama_log()

        self.n_threads = config.n_threads or default_threads()
        self.mapped = config.use_mmap is not False  # None, the engine's "decide", reaches here decided
        _PATCHING.acquire()  # the module attribute below is swapped for this load only
        real_formatter = llama_chat_format.Jinja2ChatFormatter
        llama_chat_format.Jinja2ChatFormatter = _NoTemplates
        try:
            self.llm = llama_cpp.Llama(
                model_path=path,
                n_ctx=config.n_ctx,
                n_batch=config.n_batch,
                n_ubatch=config.n_ubatch or config.n_batch,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                use_mmap=self.mapped,
                flash_attn=config.flash_attn,
                type_k=KV_GGML_TYPES[config.kv_type],
                type_v=KV_GGML_TYPES[config.kv_type],
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            said = last_llama_error()
            raise KitError(f"llama.cpp could not load {path}: {e}" + (f" ({said})" if said else "")) from None
        finally:
            llama_chat_format.Jinja2ChatFormatter = real_formatter
            _PATCHING.release()
        self.n_ctx = self.llm.n_ctx()
        self.n_batch, self.n_ubatch = self.llm.n_batch, self.llm.context_params.n_ubatch
        self.flash_attn, self.kv_type = config.flash_attn, config.kv_type
        self._vocab = self.llm._model.vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._decode, self._batch_get_one = llama_cpp.llama_decode, llama_cpp.llama_batch_get_one
        self._token_t = llama_cpp.llama_token
        self._to_piece = llama_cpp.llama_token_to_piece
        self._pieces: dict[int, bytes] = {}  # token -> bytes, filled as tokens are first seen
        self._eog: dict[int, bool] = {}  # token -> end of generation?, likewise
        self.add_bos = self.llm._model.add_bos_token()
        self.bos_text = self._special_text(self.llm.token_bos())
        self.eos_text = self._special_text(self.llm.token_eos())

    def _special_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=True)

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            # llama-cpp-python's own token_to_piece returns its whole 32-byte buffer, NULs included.
            buf = ctypes.create_string_buffer(64)
            n = self._to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:  # the piece is longer than the buffer: -n bytes are needed
                buf = ctypes.create_string_buffer(-n)
                n = self._to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(self._is_eog(self._vocab, token))
        return eog

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading `tokens` the KV cache holds already (one comparison, not a Python loop)."""
        import numpy as np

        n = min(self.llm.n_tokens, len(tokens))
        differ = np.flatnonzero(self.llm.input_ids[:n] != np.asarray(tokens[:n]))
        same = int(differ[0]) if differ.size else n
        return min(same, len(tokens) - 1)  # the last prompt token is always evaluated again

    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]:
        """Evaluate what the KV cache lacks of `tokens`, then sample and evaluate token by token.

        Our own loop rather than Llama.generate: the same native sampler chain and prefix reuse,
        and it times prompt evaluation and the first sample apart (prompt_eval_s, first_sample_s).
        """
        llm = self.llm
        seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "little")
        sampler = self.sampler(sampling, seed)
        try:
            yield from self._generate(llm, tokens, sampler)
        finally:
            # Now, not when the garbage collector gets to it: LlamaSampler frees itself through a
            # reference cycle, and each chain holds vocabulary-sized buffers (RSS grew 3-8 MB an
            # answer with Qwen's 152k vocabulary until a collection).
            sampler.close()

    def _generate(self, llm, tokens: Sequence[int], sampler) -> Iterator[int]:
        keep = self.cached_prefix(tokens)
        if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):  # recurrent models cannot drop a tail
            llm.reset()
            keep = 0
        llm.n_tokens = keep
        t0 = time.perf_counter()
        llm.eval(tokens[keep:])
        t1 = time.perf_counter()
        token = sampler.sample(llm._ctx, -1)
        self.prompt_eval_s, self.first_sample_s = t1 - t0, time.perf_counter() - t1
        # One token a step straight through llama_decode: Llama.eval would also copy the whole
        # vocabulary's logits into a NumPy array (196 KB a token for SmolLM2) that nobody reads,
        # since the sampler reads them from the context. Positions follow the KV cache.
        decode, ctx, one = self._decode, llm._ctx.ctx, (self._token_t * 1)()
        batch = self._batch_get_one(one, 1)
        while True:
            yield token
            if llm.n_tokens >= self.n_ctx:
                return
            one[0] = token
            if decode(ctx, batch) != 0:
                raise KitError("llama.cpp could not evaluate the next token (llama_decode failed)")
            llm.input_ids[llm.n_tokens] = token  # what cached_prefix compares the next prompt with
            llm.n_tokens += 1
            token = sampler.sample(llm._ctx, -1)

    def sampler(self, sampling: Sampling, seed: int):
        """llama.cpp's native sampler chain, in the order llama-cpp-python uses, made cheaper.

        The repeat penalty looks every vocabulary entry up in its history (0.19 ms a token for
        SmolLM2's 49k). It only lowers the logits of the last 64 distinct tokens, so every token
        that can make the penalised top-k is already in the unpenalised top-(k + 64): a top-k
        pre-filter of that size first gives the same result for a fraction of the work.
        """
        from llama_cpp import _internals

        s = _internals.LlamaSampler()
        greedy = sampling.temperature <= 0
        keep = 1 if greedy else sampling.top_k
        if sampling.repeat_penalty != 1.0:
            if keep > 0:
                s.add_top_k(keep + self.PENALTY_LAST_N)
            s.add_penalties(self.llm.n_vocab(), self.PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0)
        if greedy:
            s.add_greedy()
            return s
        if sampling.top_k > 0:
            s.add_top_k(sampling.top_k)
        s.add_top_p(sampling.top_p, 1)
        s.add_min_p(sampling.min_p, 1)
        s.add_temp(sampling.temperature)
        s.add_dist(seed)
        return s

    def close(self) -> None:
        self.llm.close()


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


def fit_history(
    messages: Sequence[Message], fmt: ChatFormat, tokenize, n_ctx: int, max_tokens: int, min_reply: int = 16
) -> tuple[list[int], int, int]:
    """Drop the oldest turns until the prompt leaves room for the reply.

    Returns (prompt tokens, tokens left for the reply, messages dropped). The system prompt
    and the last question are always kept; KitError when they alone leave no room.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system) :])
    dropped = 0
    while True:
        tokens = tokenize(fmt.render(system + turns))
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

    def __init__(self, fmt: ChatFormat, tokenize):
        self.fmt, self._tokenize = fmt, tokenize
        self.format_s = self.tokenize_s = 0.0

    def render(self, messages) -> str:
        t = time.perf_counter()
        try:
            return self.fmt.render(messages)
        finally:
            self.format_s += time.perf_counter() - t

    def tokenize(self, text: str) -> list[int]:
        t = time.perf_counter()
        try:
            return self._tokenize(text)
        finally:
            self.tokenize_s += time.perf_counter() - t


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
        ref = model if isinstance(model, ModelRef) else resolve(model)
        info = read_gguf(ref.path)  # validates the whole header before llama.cpp sees the file
        n_ctx = min(config.n_ctx, info.context_length or config.n_ctx)
        if info.context_length and info.context_length < options.CTX.lo:
            raise KitError(
                f"{ref.path.name} was trained for a context of {info.context_length} tokens; the kit needs "
                f"at least {options.CTX.lo} (a chat prompt and room for an answer)"
            )
        mapped = memory.maps_file(info) if config.use_mmap is None else config.use_mmap
        ubatch = min(config.n_ubatch or memory.micro_batch(info, n_ctx), config.n_batch)
        memory.check_fits(
            memory.estimate(info, n_ctx, config.kv_type, n_ubatch=ubatch, mapped=mapped),
            f"model {ref.id} at a {n_ctx}-token context",
        )
        config = EngineConfig(**{**asdict(config), "n_ctx": n_ctx, "use_mmap": mapped, "n_ubatch": ubatch})
        if not trusted(ref):
            probe_load(ref.path, min(n_ctx, 512), mapped=mapped)
        if info.chat_template and config.chat_format in (None, "template"):
            template_worker.prestart()  # its start (~0.1 s) overlaps the model's load
        backend = LlamaBackend(str(ref.path), config)
        requested = config.chat_format or (None if info.chat_template else ref.prompt_format)
        fmt, warning = choose_format(
            requested,
            info.chat_template,
            bos_token=backend.bos_text,
            eos_token=backend.eos_text,
            fallback=ref.prompt_format or "chatml",
        )
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
        return len(self.backend.tokenize(text))

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
        timed = _Timed(self.format, b.tokenize)
        before = self.format.name
        tokens, max_new, dropped = fit_history(messages, timed, timed.tokenize, b.n_ctx, sampling.max_tokens)
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
        memory.reset_peak_rss()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Benchmarks generate a fixed number of tokens as llama-bench does: a model that ends its
        # text early (a base model) must not stop at its end-of-text token nor at its text.
        scanner = StopScanner(() if sampling.ignore_eos else self.format.stops)
        started = False  # leading whitespace of an answer is dropped
        t_first = t_last = t0
        sampled = 0  # tokens sampled, the end-of-generation token included: decode steps + 1
        for token in b.generate(tokens, sampling):
            t_last = time.perf_counter()
            sampled += 1
            if sampled == 1:
                t_first = t_last
            if b.is_eog(token) and not sampling.ignore_eos:
                break
            stats.completion_tokens += 1
            text = scanner.feed(decoder.decode(b.token_bytes(token)))
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
        stats.peak_rss_mb = memory.peak_rss_mb()
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

    def close(self) -> None:
        with self._lock:
            self.backend.close()


def conversation(question: str, system: str | None = None, history: Sequence[Message] = ()) -> list[Message]:
    """Messages for a question: `conversation("Hi", "Be brief")` -> [system, user]."""
    head = [{"role": "system", "content": system}] if system else []
    return head + list(history) + [{"role": "user", "content": question}]

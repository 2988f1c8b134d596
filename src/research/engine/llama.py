"""llama.cpp through llama-cpp-python, token by token: the engine's backend.

The kit drives llama.cpp itself rather than through Llama.generate: the same native sampler
chain and KV-cache prefix reuse, with prompt evaluation and the first sample timed apart, each
new token decoded straight through llama_decode, and llama.cpp's log kept instead of printed.

While it generates it also reads, for every token, the model's own distribution that the token
was drawn from (the logits llama.cpp left in the context for the sampler): the token's
log-probability and the distribution's entropy, the free confidence signals of
research.confidence.methods. Reading them changes nothing the sampler sees.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from research import device
from research.engine import hugepages, native
from research.engine.llama_signals import SignalReader, log_sum_exp
from research.engine.memory import KV_TYPES
from research.errors import KitError
from research.units import MB

if TYPE_CHECKING:
    from research.engine.types import EngineConfig, Sampling


class _NoTemplates:
    """Stands in for llama-cpp-python's Jinja2ChatFormatter while a model loads.

    Llama() compiles every chat template in the file; a syntax error there aborts the load, and
    the kit never uses those handlers: it renders templates itself, in its own sandbox.
    """

    def __init__(self, *args, **kwargs):
        pass

    def to_chat_handler(self):
        return None


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


class LlamaBackend(SignalReader):
    """llama-cpp-python's Llama, used token by token through its native sampler chain."""

    PENALTY_LAST_N = 64  # tokens the repeat penalty looks back over (llama-cpp-python's default)

    def __init__(self, path: str, config: EngineConfig, extra_bufts: bool = True):
        """Load `path`. `extra_bufts=False` keeps llama.cpp's extra weight layouts off (its AMX
        kernels and the repacked Q4_0/IQ4_NL forms): the fallback of research.engine.selftest for an
        engine whose AMX kernels crash on this CPU (llama.cpp issue 20824)."""
        import llama_cpp
        import numpy as np

        capture_llama_log()

        self.n_threads = config.n_threads or device.default_threads()
        self.mapped = config.use_mmap is not False  # None, the engine's "decide", reaches here decided
        self.extra_bufts = extra_bufts
        before = frozenset() if self.mapped else hugepages.snapshot()
        self.llm = self._load(path, config)
        #: MB the load filled (weights read in, KV cache) moved onto huge pages: research.engine.hugepages
        self.huge_pages_mb = 0.0 if self.mapped else hugepages.advise(before) / MB
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
        self.n_vocab = self.llm.n_vocab()
        self._logits_ith = llama_cpp.llama_get_logits_ith
        # Work buffers of the token signals, one vocabulary each: no allocation per token.
        self._z = np.empty(self.n_vocab, dtype=np.float32)
        self._e = np.empty(self.n_vocab, dtype=np.float32)
        self._views: dict[int, object] = {}  # logits address -> NumPy view (logits_view)
        self.signals = config.token_signals
        #: Decode through step.c (research.engine.native) when it builds here; False: the Python loop.
        self.native = True
        self._candidates = None  # step.c's room for the sampler's candidates, made at first use
        #: Per token generated by the last generate(): (log-probability, entropy in nats) under the
        #: model's raw distribution (before penalties, top-k/p and temperature), and the seconds spent
        #: computing them (signal_s), so their cost can be set against decode time.
        self.trace: list[tuple[float, float]] = []
        self.signal_s = 0.0
        #: The question-side signals' input (research.engine.signals.question_signals): set `watch`
        #: to a span of the next generate()'s prompt tokens (the question's, found by
        #: signals.question_span), and prompt evaluation also keeps the rows of logits that predict
        #: them; `question_trace` is then each such token's log-probability, `question_s` the
        #: seconds spent reading them. None: prompt evaluation as llama-cpp-python does it.
        self.watch: tuple[int, int] | None = None
        self.question_trace: list[float] = []
        self.question_s = 0.0
        self.prompt_eval_s = self.first_sample_s = 0.0  # the last generate()'s, set by it
        # The last generate()'s seconds in llama_decode and in the sampler chain after the first token.
        self.decode_s = self.sample_s = 0.0
        self.add_bos = self.llm._model.add_bos_token()
        self.bos_text = self._special_text(self.llm.token_bos())
        self.eos_text = self._special_text(self.llm.token_eos())

    def _load(self, path: str, config: EngineConfig):
        """llama-cpp-python's Llama of `path`, its chat templates left uncompiled (see _NoTemplates)
        and llama.cpp's extra weight layouts off where `self.extra_bufts` says so."""
        import llama_cpp
        import llama_cpp.llama_cpp as low_level
        from llama_cpp import llama_chat_format

        _PATCHING.acquire()  # the module attributes below are swapped for this load only
        real_formatter = llama_chat_format.Jinja2ChatFormatter
        real_defaults = low_level.llama_model_default_params
        llama_chat_format.Jinja2ChatFormatter = _NoTemplates
        if not self.extra_bufts:
            low_level.llama_model_default_params = functools.partial(_without_extra_bufts, real_defaults)
        try:
            return llama_cpp.Llama(
                model_path=path,
                n_ctx=config.n_ctx,
                n_batch=config.n_batch,
                n_ubatch=config.n_ubatch or config.n_batch,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                use_mmap=self.mapped,
                flash_attn=config.flash_attn,
                type_k=KV_TYPES[config.kv_type].ggml_type,
                type_v=KV_TYPES[config.kv_type].ggml_type,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            said = last_llama_error()
            raise KitError(f"llama.cpp could not load {path}: {e}" + (f" ({said})" if said else "")) from None
        finally:
            llama_chat_format.Jinja2ChatFormatter = real_formatter
            low_level.llama_model_default_params = real_defaults
            _PATCHING.release()

    def _special_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token >= 0 else ""

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        """Tokens of `text`; `special`: control-token texts become control tokens (only for the
        chat format's own markers: research.engine.prompt.prompt_tokens); `bos`: a BOS in front, as the
        model wants, unless the text starts with it."""
        add_bos = bos and self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=special)

    @functools.cached_property
    def control_texts(self) -> frozenset[str]:
        """The texts of this vocabulary's control and user-defined tokens (`<|im_start|>`, ...)."""
        import llama_cpp

        wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        get_attr = llama_cpp.llama_vocab_get_attr
        return frozenset(
            text
            for t in range(self.n_vocab)
            if get_attr(self._vocab, t) & wanted and (text := self.llm._model.token_get_text(t))
        )

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

    def reset(self) -> None:
        """Forget the KV cache: the next prompt is evaluated whole, as if it were the first.

        llama.cpp picks its attention kernels by the number of rows evaluated at once (64 or more
        take another path), so a prompt whose prefix is cached can give a different greedy answer
        than the same prompt evaluated whole; evaluation resets before each question so that a
        record depends on its question alone.
        """
        self.llm.n_tokens = 0  # cached_prefix() then finds nothing; _generate drops the cache
        self.llm._ctx.kv_cache_clear()

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
            yield from self._generate(llm, tokens, sampler, sampling)
        finally:
            # Now, not when the garbage collector gets to it: LlamaSampler frees itself through a
            # reference cycle, and each chain holds vocabulary-sized buffers (RSS grew 3-8 MB an
            # answer with Qwen's 152k vocabulary until a collection).
            sampler.close()

    def _generate(
        self, llm, tokens: Sequence[int], sampler, sampling: Sampling | None = None
    ) -> Iterator[int]:
        keep = self.cached_prefix(tokens)
        watch = self.watch if self.signals else None
        if watch:  # the question's rows are read only when evaluated now
            keep = min(keep, max(0, watch[0] - 1))
        if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):  # recurrent models cannot drop a tail
            llm.reset()
            keep = 0
        llm.n_tokens = keep
        t0 = time.perf_counter()
        self.question_trace, self.question_s = [], 0.0
        if watch:
            self._eval_watching(llm, tokens, keep, watch)
        else:
            llm.eval(tokens[keep:])
        t1 = time.perf_counter()
        token = sampler.sample(llm._ctx, -1)
        self.prompt_eval_s, self.first_sample_s = t1 - t0, time.perf_counter() - t1
        self.trace, self.signal_s = [], 0.0
        self.decode_s = self.sample_s = 0.0
        signal = self._token_signal if self.signals else None
        if signal:
            signal(token)
        first_k = getattr(sampler, "keep", None)  # set on the kit's own chains (sampler())
        step = native.step() if first_k is not None and sampling is not None and self.native else None
        if step:
            if self._candidates is None:
                self._candidates = native.candidates(self.n_vocab)
            signals = signal is not None
            yield from native.decode_loop(
                self, llm, step, sampler, first_k, token, signals, sampling, self._candidates
            )
            return
        # One token a step straight through llama_decode: Llama.eval would also copy the whole
        # vocabulary's logits into a NumPy array (196 KB a token for SmolLM2) that nobody reads,
        # since the sampler reads them from the context. Positions follow the KV cache.
        decode, ctx, one = self._decode, llm._ctx.ctx, (self._token_t * 1)()
        batch = self._batch_get_one(one, 1)
        clock = time.perf_counter
        while True:
            yield token
            if llm.n_tokens >= self.n_ctx:
                return
            one[0] = token
            t0 = clock()
            if decode(ctx, batch) != 0:
                raise KitError("llama.cpp could not evaluate the next token (llama_decode failed)")
            t1 = clock()
            llm.input_ids[llm.n_tokens] = token  # what cached_prefix compares the next prompt with
            llm.n_tokens += 1
            token = sampler.sample(llm._ctx, -1)
            # Where a step's time goes (bench --compare prints it a token): llama.cpp's decode,
            # the sampler chain, then the signals (signal_s) and the engine's own loop.
            self.decode_s += t1 - t0
            self.sample_s += clock() - t1
            if signal:
                signal(token)

    def teacher_force(self, tokens: Sequence[int], forced: Sequence[int]) -> list[tuple[float, float]]:
        """The (log-probability, entropy) trace of `forced` tokens after the prompt `tokens`, fed
        one at a time through the same loop as generation (so a greedy answer forced again gives
        its own trace back): the free signals of an answer whose signals were not kept."""
        if not forced:
            return []
        saved, self.signals = self.signals, True
        steps = self._generate(self.llm, tokens, _Forced(forced))
        try:
            for i, _ in enumerate(steps):
                if i + 1 >= len(forced):
                    break
        finally:
            steps.close()
            self.signals = saved
        return list(self.trace)

    def next_logprobs(self, tokens: Sequence[int], candidates: Sequence[str]) -> list[float]:
        """Log-probabilities of the first token of each candidate text right after `tokens` (one
        prompt evaluation, prefix reused from the KV cache): P(True)'s "A" against "B"."""

        ids = [self.llm.tokenize(c.encode(), add_bos=False, special=False)[0] for c in candidates]
        steps = self._generate(self.llm, tokens, _Forced(ids[:1]))
        try:
            next(steps)
            x = self.logits_view()
            lse = log_sum_exp(x, self._z)
            return [float(x[i]) - lse for i in ids]
        finally:
            steps.close()

    def sampler(self, sampling: Sampling, seed: int):
        """llama.cpp's native sampler chain, in the order llama-cpp-python uses, made cheaper.

        The repeat penalty looks every vocabulary entry up in its history (0.19 ms a token for
        SmolLM2's 49k). Above 1 it only lowers the logits of the last 64 distinct tokens, so every
        token that can make the penalised top-k is already in the unpenalised top-(k + 64): a top-k
        pre-filter of that size first gives the same result for a fraction of the work. Under 1 it
        raises them, and the chain goes without the pre-filter.
        """
        from llama_cpp import _internals

        s = _internals.LlamaSampler()
        greedy = sampling.temperature <= 0
        keep = 1 if greedy else sampling.top_k
        # `s.keep`: how many of the highest logits the chain's first sampler keeps (0: all), so
        # that the C step (research.engine.native) can hand it only the tokens that can survive.
        s.keep = keep
        if sampling.repeat_penalty != 1.0:
            if keep > 0 and sampling.repeat_penalty > 1.0:
                s.add_top_k(keep + self.PENALTY_LAST_N)
                s.keep = keep + self.PENALTY_LAST_N
            else:  # a penalty under 1 raises logits: any token may win, none is filtered out
                s.keep = 0
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


def _without_extra_bufts(defaults):
    """llama.cpp's default model parameters with its extra buffer types (AMX, repacking) off."""
    params = defaults()
    params.use_extra_bufts = False
    return params


class _Forced:
    """A stand-in for the sampler chain that "samples" given tokens in order (teacher forcing)."""

    def __init__(self, tokens: Sequence[int]):
        self.tokens, self.i = list(tokens), 0

    def sample(self, _ctx, _idx) -> int:
        token = self.tokens[min(self.i, len(self.tokens) - 1)]
        self.i += 1
        return token

"""The engine's shared types: how an answer is sampled (Sampling), how a model is loaded
(EngineConfig), the figures of one answer (Stats), and what the engine needs of a model runtime
(Backend). Below everything else in research.engine, so the decode loop, the llama.cpp backend, the
self-test and the tests' scripted backend all import them from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from research.errors import KitError

#: The system prompt a chat starts with on the page (and `eval --as-page` asks with): a person
#: may change it there.
CHAT_SYSTEM = "You are a helpful assistant. Answer the question briefly and accurately."


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
    # The free confidence signals of the answer (research.engine.signals.token_signals: a dozen
    # numbers, never whole distributions), None when the backend gives none; and the seconds
    # spent reading them while decoding, to set against decode time.
    signals: dict | None = None
    signal_s: float = 0.0
    # Where the decode steps' time went (bench --compare prints it a token): {"steps", "wall_s"
    # (first to last token), "decode_s" (llama_decode), "sample_s" (the sampler chain),
    # "signal_s" (the answer's free signals)}; the rest of wall_s is the engine's own loop
    # (detokenization, stop strings) and whoever reads the stream. None from a backend that
    # does not time its parts.
    step_parts: dict | None = None

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


@runtime_checkable
class Backend(Protocol):
    """What the engine needs of a model runtime (llama.cpp here: research.engine.llama.LlamaBackend;
    a scripted fake in tests/fakes.py), every attribute the kit reads of one.

    The figures of the last generate() (prompt_eval_s, first_sample_s) and the free confidence
    signals it kept (trace: per token, its log-probability and the entropy of its distribution;
    signal_s: the seconds spent on them) are read after it, and the question-side ones likewise
    (watch: the prompt tokens of the question, set before it; question_trace: their
    log-probabilities; question_s: the seconds spent; decode_s and sample_s: the seconds in the
    model's decode steps and its sampler after the first token); control_texts are the vocabulary's
    control-token texts (prompt_tokens breaks them in content when it has to); native: whether it
    decodes through its C step when that builds (research.engine.native; bench --compare says which);
    huge_pages_mb: how much of a model read in (not mapped) went onto huge pages (research.engine.hugepages).
    """

    n_ctx: int
    n_threads: int
    n_batch: int
    n_ubatch: int
    kv_type: str
    flash_attn: bool
    extra_bufts: bool
    mapped: bool
    huge_pages_mb: float
    add_bos: bool
    bos_text: str
    eos_text: str
    control_texts: frozenset[str]
    trace: list[tuple[float, float]]
    signal_s: float
    watch: tuple[int, int] | None
    decode_s: float
    sample_s: float
    question_trace: list[float]
    question_s: float
    prompt_eval_s: float
    first_sample_s: float
    native: bool

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]: ...
    def token_bytes(self, token: int) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def cached_prefix(self, tokens: Sequence[int]) -> int: ...
    def reset(self) -> None: ...
    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]: ...
    def teacher_force(self, tokens: Sequence[int], forced: Sequence[int]) -> list[tuple[float, float]]: ...
    def next_logprobs(self, tokens: Sequence[int], candidates: Sequence[str]) -> list[float]: ...
    def close(self) -> None: ...

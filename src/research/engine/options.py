"""The allowed range of every number a user can give, defined once with the reason for its bounds.

The CLI checks its options against these ranges as argparse types (`CTX.arg`), before any
model loads; `Sampling` and `EngineConfig` check their fields against the same ranges
(`CTX.check`), because the page passes values from sliders and from its HTTP API, where any
number can arrive. A value refused in one place is refused in the other, in one line.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from research.errors import KitError


@dataclass(frozen=True)
class Range:
    """An interval of whole numbers or of finite numbers: `Range(1, None)` is 1, 2, 3, ..."""

    lo: float | None
    hi: float | None
    integer: bool = True
    lo_open: bool = False  # lo itself is excluded: "above 0"
    unit: str = ""  # "tokens", "threads": said in the message

    def describe(self) -> str:
        """`Range(64, 100, unit="tokens")` -> "a whole number of tokens from 64 to 100"."""
        kind = "a whole number" if self.integer else "a number" if self.hi is not None else "a finite number"
        kind += f" of {self.unit}" if self.unit else ""
        lo, hi = _show(self.lo), _show(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"{kind} above {lo} and at most {hi}" if self.lo_open else f"{kind} from {lo} to {hi}"
        if self.lo is not None:
            return f"{kind} above {lo}" if self.lo_open else f"{kind} of at least {lo}"
        return f"{kind} of at most {hi}" if self.hi is not None else kind

    def ok(self, value) -> bool:
        """Whether `value` (already a number) is of the right kind and inside the range."""
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            return False
        if not self.integer and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def check(self, value, name: str):
        """`value` if it is in range, else KitError: "n_ctx must be a whole number ..., not 0"."""
        if not self.ok(value):
            raise KitError(f"{name} must be {self.describe()}, not {value!r}")
        return value

    def arg(self, text: str):
        """An argparse type: the number in `text`, or a one-line usage error naming the range."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            value = None
        if value is None or not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, not {text!r}")
        return value


def _show(bound: float | None) -> str:
    return "" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


#: llama.cpp pads a context up to a multiple of 256 (llama-context.cpp) and numbers positions
#: with int32 (llama_pos): 2**31 - 256 is the longest context it can address. Above it the
#: uint32 n_ctx would also wrap, and 0 there means "the model's whole trained context".
CTX_MAX = 2**31 - 256
#: Context (tokens): below 64 the chat template's system prompt (35 tokens for SmolLM2) and the
#: 16 tokens kept for a reply no longer fit; 0 would mean "the trained context" to llama.cpp and
#: skip the kit's memory check. The model's own trained context caps it later (Engine.load).
CTX = Range(64, CTX_MAX, unit="tokens")
#: Tokens per llama_decode call (n_batch, n_ubatch): positive, and never more than a context.
BATCH = Range(1, CTX_MAX, unit="tokens")
#: Threads: ggml's thread pool holds at most GGML_MAX_N_THREADS = 512 (ggml.h); beyond 4 per
#: logical CPU threads only wait on each other (-1 or 0 made llama.cpp run at a quarter speed).
THREADS_MAX = min(4 * (os.cpu_count() or 1), 512)
THREADS = Range(1, THREADS_MAX, unit="threads")
#: Parallel compile jobs: the same bound; each job of llama.cpp's build takes ~0.5-1 GB.
JOBS = Range(1, THREADS_MAX, unit="jobs")

# Sampling, as llama.cpp's sampler chain takes it (llama.h).
#: 0 means greedy; above that any finite temperature (a huge one samples near-uniformly).
TEMPERATURE = Range(0.0, None, integer=False)
#: 0 turns top-k off. llama.cpp takes k as an int32 and the engine adds its 64-token repeat
#: penalty window to it; 2**30 is far beyond any vocabulary, where top-k keeps everything anyway.
TOP_K = Range(0, 2**30)
#: A probability mass: 1 keeps every token; 0 would keep none (llama.cpp then keeps one).
TOP_P = Range(0.0, 1.0, integer=False, lo_open=True)
#: A fraction of the top token's probability: 0 turns it off, 1 keeps only the top tokens.
MIN_P = Range(0.0, 1.0, integer=False)
#: Divides the logits of recent tokens: 1 is off; 0 would divide by zero, below 0 flips signs.
REPEAT_PENALTY = Range(0.0, None, integer=False, lo_open=True)
#: At least one token; an answer never outgrows the context.
MAX_TOKENS = Range(1, CTX_MAX, unit="tokens")
#: llama_sampler_init_dist takes a uint32 seed, and 0xFFFFFFFF (LLAMA_DEFAULT_SEED) there means
#: "a random seed": the largest seed that reproduces an answer is 2**32 - 2.
SEED = Range(0, 2**32 - 2)
#: Sampling also takes -1 as "random", like None: it is the page's "Seed (-1 = random)", bench's
#: warm-up passes it, and llama.cpp reads it (as uint32: LLAMA_DEFAULT_SEED) the same way.
RANDOM_SEED = -1

# Measuring (bench, quality) and evaluating.
#: Repetitions: a figure needs one at least.
REPS = Range(1, None)
#: Prompt tokens of bench's pp test: llama-bench's -p 0 means "no prompt test" (and no row).
PP = Range(1, CTX_MAX, unit="tokens")
#: Generated tokens of bench's tg test: a decode speed is (tokens - 1) / time from the first
#: token to the last, so it needs two tokens; with one it is 0 t/s and its ratios divide by 0.
TG = Range(2, CTX_MAX, unit="tokens")
#: Tokens bench keeps beside pp + tg in its context (chat_timing.kit_rows: n_ctx = pp + tg + 64).
BENCH_SLACK = 64
#: Chunks of the corpus to score: at least one (-1 used to score almost all of it).
CHUNKS = Range(1, None)
#: Questions to ask: at least one (0 used to mean "all of them").
LIMIT = Range(1, None, unit="questions")
#: Answers sampled per question for the agreement signals: two at least to agree at all; beyond
#: 64 each question costs more than a minute on a phone for a signal that no longer moves.
SAMPLES = Range(2, 64, unit="answers")
#: A probability (the abstention threshold): 0 abstains never, 1 always.
PROBABILITY = Range(0.0, 1.0, integer=False)
#: Example questions before the asked one (eval --fewshot): lm-evaluation-harness uses 0 to 25;
#: 64 examples already fill a 2048-token context.
FEWSHOT = Range(0, 64, unit="examples")
#: Idle minutes before the page unloads its model: 0 is never; a week is the most that means
#: anything for a page left open.
UNLOAD_AFTER = Range(0.0, 7 * 24 * 60.0, integer=False, unit="minutes")
#: Seconds to watch the page at rest (bench --idle): long enough to see a 1 s timer, at most an hour.
IDLE_SECONDS = Range(5.0, 3600.0, integer=False, unit="seconds")
#: The page's TCP port: 16 bits; 0 would let the system pick one the page could not print.
PORT = Range(1, 65535)

#: argparse types by what they take, for the CLI and the page's own options (demo/app.py).
context = CTX.arg
threads = THREADS.arg
port = PORT.arg


def check_kv_type(name) -> str:
    """`name` if it is a KV-cache type llama.cpp and the memory model know, else KitError."""
    from research.engine.memory import KV_TYPES

    if not isinstance(name, str) or name not in KV_TYPES:
        raise KitError(f"unknown KV-cache type {name!r}; choose from: {', '.join(KV_TYPES)}")
    return name


def kv_types(text: str) -> list[str]:
    """An argparse type: "f16,q8_0" -> ["f16", "q8_0"], each a known KV-cache type."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        if not names:
            raise KitError(f"name at least one KV-cache type, like f16 or f16,q8_0, not {text!r}")
        return [check_kv_type(t) for t in names]
    except KitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def threads_list(text: str) -> list[int]:
    """An argparse type: "1,2" -> [1, 2], each a thread count in THREADS."""
    parts = [x.strip() for x in text.split(",")]
    try:
        out = [THREADS.arg(x) for x in parts]
    except argparse.ArgumentTypeError:
        out = []
    if not out:
        raise argparse.ArgumentTypeError(
            f"must be thread counts from 1 to {THREADS_MAX}, like 1,2,4, not {text!r}"
        )
    return out


def input_file(text: str) -> str:
    """An argparse type: a regular file that exists and can be read (not a folder, pipe or device)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file inside it")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not path.is_file():  # a named pipe or a device would be read until it ends, perhaps never
        raise argparse.ArgumentTypeError(f"{text} is not a regular file (a pipe or a device); name a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text}: permission denied")
    return text


def questions_file(text: str) -> str:
    """An argparse type: an input_file, or what evaluate.load_questions reads otherwise (hf:NAME,
    globs), or several of them separated by commas (each question then names its set)."""
    if "," in text and not Path(text).expanduser().is_file():
        for part in filter(None, (p.strip() for p in text.split(","))):
            questions_file(part)
        return text
    return text if text.startswith("hf:") or "*" in text else input_file(text)


def folder(text: str) -> str:
    """`text` if it names an existing folder, else KitError in one line."""
    path = Path(text).expanduser()
    if not path.exists():
        raise KitError(f"no such folder: {text}")
    if not path.is_dir():
        raise KitError(f"{text} is a file, not a folder")
    return text


def output_file(text: str) -> str:
    """An argparse type: a path a file can be written to (its missing folders may be created).

    Refused: an existing folder, a path below a file, a read-only place. Checked before minutes
    of work, not after.
    """
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("name a file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file inside it (e.g. {path / 'out'})")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
        return text
    parent = path.absolute().parent
    while not parent.exists():  # the nearest folder that exists must allow creating the rest
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is not writable")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line: `error: argument --ctx: ... (see: research chat --help)`.

    argparse prints the usage (often several lines) and then the error; the kit's rule is one
    line on stderr and a non-zero exit (2, argparse's) for any error a user can fix.
    """

    def error(self, message: str):
        line = " ".join(f"{message} (see: {self.prog} --help)".split())
        self.exit(2, f"error: {line}\n")

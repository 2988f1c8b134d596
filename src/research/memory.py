"""Memory: will a model fit before we load it, and how much did an answer use.

On a phone the low-memory killer ends a process that overreaches with no message at all
("signal 9" in Termux), so the kit checks file size plus KV cache against what is available
first and refuses in plain words.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from research.errors import KitError

MB = 1024 * 1024

#: Bytes per cached value of each KV-cache type (block size 32: q8_0 = 34 bytes, q4_0 = 18).
KV_TYPES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

#: Weight types llama.cpp's CPU backend copies into an interleaved layout at load time
#: (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type): the copy lives beside the
#: mapped file, so these weights count twice in resident memory. Keyed by CPU kind.
REPACKED = {
    "x86-avx512": {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4", "Q2_K"},
    "x86-avx2": {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"},
    "arm-dotprod": {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"},  # Snapdragon 888 on
    "other": set(),
}

#: The Python process with llama_cpp and numpy imported, before any model: 49 MiB measured here
#: (CPython 3.11, x86-64). Used when the prediction is for another device.
RUNTIME_BYTES = 52 * 10**6
#: llama.cpp's own context, thread pool and allocator slack besides the sized buffers below;
#: fitted on the bundled model (what remained of the measured peak), about 6 MB.
CONTEXT_BYTES = 6 * 10**6
#: llama.cpp's vocabulary per token: its text, the token-to-id map, the BPE merge ranks and the
#: piece cache. 294-336 bytes measured (a tokenizer padded from 49,152 to 100,000, 151,936 and
#: 200,000 tokens with a merge each, loaded vocab-only: 3.8, 21.0, 36.4, 50.4 MB).
VOCAB_BYTES_PER_TOKEN = 300


def repacked_tensors(info, cpu: str | None = None) -> list:
    """Tensors of a GGUF that llama.cpp repacks for this CPU (weights of matrix products only)."""
    rules = REPACKED[cpu or cpu_kind()]
    return [
        t
        for t in info.tensors
        if t.type_name in rules
        and len(t.shape) >= 2
        and t.name != "token_embd.weight"
        and t.shape[1] % 8 == 0
    ]


def maps_file(info, cpu: str | None = None) -> bool:
    """Whether the engine maps the file (mmap) rather than reading it in: it reads it in when this
    CPU repacks some of its weights.

    llama.cpp copies repacked weights into an interleaved buffer and computes with the copy, yet
    a mapped file's pages of them stay resident beside it (llama.cpp issue 16761): the weights
    count twice. Dropping those pages (madvise) does not hold either: when the page cache keeps
    the file in large folios, reading the tensors that are not repacked maps whole folios back,
    repacked neighbours included (+216 MB measured on an 813 MB Q4_K_M). Read in, every weight
    is resident once; decode speed is the same (llama-bench -lm none against mmap).
    """
    return not repacked_tensors(info, cpu)


def cpu_kind(features: list[str] | None = None) -> str:
    """Which repack rules apply: "x86-avx2", "x86-avx512", "arm-dotprod" or "other"."""
    if features is None:
        from research.build import cpu_features

        features = cpu_features()
    f = set(features)
    if "avx512f" in f and "avx512bw" in f:
        return "x86-avx512"
    if "avx2" in f:
        return "x86-avx2"
    if "asimddp" in f:
        return "arm-dotprod"
    return "other"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> tuple[int, str]:
    """Bytes this process may still use, and what limits it ("system memory", "cgroup", ...).

    The smallest of: the system's available memory, the cgroup v2 limit minus its usage, and
    the address-space limit (RLIMIT_AS) minus the address space already mapped.
    """
    limits = [(psutil.virtual_memory().available, "available system memory")]
    cg_max, cg_cur = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cg_max is not None and cg_cur is not None:
        limits.append((max(cg_max - cg_cur, 0), "the cgroup memory limit"))
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(
            (max(soft - psutil.Process().memory_info().vms, 0), "the address-space limit (ulimit -v)")
        )
    return min(limits)


def kv_cache_bytes(
    n_ctx: int, n_layer: int, n_head_kv: int, head_dim: int, bytes_per_value: float = 2
) -> int:
    """Size of the K and V caches: 2 x layers x context x kv-heads x head size (f16: 2 bytes).

    `kv_cache_bytes(4096, 30, 3, 64)` -> 94371840 (SmolLM2-135M at a 4096-token context).
    """
    return int(2 * n_layer * n_ctx * n_head_kv * head_dim * bytes_per_value)


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak resident memory of the kit's engine answering a question, by part (bytes)."""

    weights: int  # the weights once: the mapped file as far as a forward pass reads it, or read in
    kv_cache: int
    repacked: int = 0  # a mapped file's pages of weights llama.cpp also holds repacked: twice
    compute: int = 0  # activations of one prompt batch, the logits row, vocabulary tables
    runtime: int = RUNTIME_BYTES + CONTEXT_BYTES  # Python, llama_cpp, llama.cpp's context
    staging: int = 0  # read in: the tensor being read before llama.cpp repacks it (loading only)
    mapped: bool = True  # the engine maps the file (else reads it in: see maps_file)

    @property
    def overhead(self) -> int:
        return self.repacked + self.compute + self.runtime

    @property
    def load(self) -> str:
        return "mmap" if self.mapped else "read"

    @property
    def loading(self) -> int:
        """While loading: no activations yet, but one tensor staged when the file is read in."""
        return self.weights + self.repacked + self.staging + self.kv_cache + self.runtime

    @property
    def answering(self) -> int:
        return self.weights + self.repacked + self.kv_cache + self.compute + self.runtime

    @property
    def total(self) -> int:
        """The process's peak: loading or answering, whichever needs more."""
        return max(self.loading, self.answering)

    def describe(self) -> str:
        return (
            f"{self.total / MB:.0f} MB (weights {self.weights / MB:.0f} MB + KV cache "
            f"{self.kv_cache / MB:.0f} MB + {self.overhead / MB:.0f} MB working memory)"
        )

    def as_dict(self) -> dict:
        keys = ("weights", "kv_cache", "repacked", "compute", "runtime", "staging", "total", "answering")
        return {k: getattr(self, k) for k in keys} | {"load": self.load}


def estimate(
    info,
    n_ctx: int,
    kv_type: str = "f16",
    cpu: str | None = None,
    n_ubatch: int | None = None,
    mapped: bool | None = None,
) -> MemoryEstimate:
    """Predict the peak memory of answering with a GGUF (research.gguf_info.GGUFInfo), before loading.

    Args:
        n_ctx: context size in tokens; kv_type: "f16", "q8_0", "q4_0" or "f32".
        cpu: the repack rules to apply (see REPACKED; default: this machine's).
        n_ubatch: prompt tokens evaluated at once, llama.cpp's micro-batch (the activations grow
            with it; default: as the engine chooses, see micro_batch).
        mapped: whether the file is mapped (default: as the engine chooses, see maps_file).
    """
    if kv_type not in KV_TYPES:
        raise KitError(f"unknown KV-cache type {kv_type!r}; choose from: {', '.join(KV_TYPES)}")
    n_layer, n_head_kv, head_dim, n_embd, n_ff, n_vocab = _dims(info)
    names = {t.name: t for t in info.tensors}
    repacked = [t.n_bytes for t in repacked_tensors(info, cpu)]
    mapped = not repacked if mapped is None else mapped
    weights = info.file_size
    if mapped and "output.weight" in names and "token_embd.weight" in names:
        weights -= names["token_embd.weight"].n_bytes  # untied: a lookup reads one row per token
    if n_ubatch is None:
        n_ubatch = micro_batch(info, n_ctx)
    compute = _compute_bytes(n_embd, n_ff, n_vocab, min(n_ubatch, n_ctx))
    kv = kv_cache_bytes(n_ctx, n_layer, n_head_kv, head_dim, KV_TYPES[kv_type])
    if mapped:
        return MemoryEstimate(weights, kv, sum(repacked), compute)
    return MemoryEstimate(weights, kv, 0, compute, staging=max(repacked, default=0), mapped=False)


def _dims(info) -> tuple[int, int, int, int, int, int]:
    """(layers, KV heads, head size, width, feed-forward width, vocabulary) from a GGUF header."""
    n_head = info.head_count or 1
    n_embd = info.embedding_length or 0
    n_ff = info.arch_value("feed_forward_length") or 4 * n_embd
    return (
        info.block_count or 0,
        info.head_count_kv or n_head,
        info.arch_value("attention.key_length") or (n_embd // n_head),
        n_embd,
        max(n_ff) if isinstance(n_ff, list) else n_ff,
        next((t.shape[1] for t in info.tensors if t.name == "token_embd.weight"), 32000),
    )


def _compute_bytes(n_embd: int, n_ff: int, n_vocab: int, batch: int) -> int:
    """Activations of one prompt batch (f32), the logits row and copy, vocabulary tables."""
    return batch * (4 * n_embd + 3 * n_ff) * 4 + n_vocab * (8 + VOCAB_BYTES_PER_TOKEN)


#: The engine's working memory (runtime, activations, vocabulary tables) is kept within this:
#: the budget is file + KV cache + 100 MB, less 10 MB for the prediction's error.
WORKING_MEMORY = 90 * MB


def micro_batch(info, n_ctx: int) -> int:
    """The largest micro-batch, 512, 256 or 128 prompt tokens, that keeps the engine's working
    memory within WORKING_MEMORY (at least 128).

    The activations of a prompt batch grow with the micro-batch and the model's width: 69 MB at
    512 tokens on Qwen2.5-1.5B's shape, more than the budget leaves. Smaller micro-batches cost
    those models nothing measurable here (llama-bench pp512 at -ub 128/256/512, 2 threads:
    0.5B shape 121/119/116 t/s, 1.5B shape 51/55/46); SmolLM2 loses 8 % at 128 (230 against 251)
    but keeps 512, whose activations are 14 MB.
    """
    _, _, _, n_embd, n_ff, n_vocab = _dims(info)
    runtime = MemoryEstimate.runtime  # the dataclass field's default
    for n in (512, 256):
        if _compute_bytes(n_embd, n_ff, n_vocab, min(n, n_ctx)) + runtime <= WORKING_MEMORY:
            return n
    return 128


def estimate_shape(
    file_bytes: int,
    quant: str,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head_kv: int,
    head_dim: int,
    vocab: int,
    tied: bool,
    n_ctx: int,
    kv_type: str = "f16",
    cpu: str = "arm-dotprod",
    n_ubatch: int = 512,
) -> MemoryEstimate:
    """estimate() for a model known only by its published size and shape (no file at hand).

    When the main type repacks on `cpu`, the engine reads the file in (see maps_file): every
    weight resident once, one feed-forward matrix staged while loading.
    """
    params = max(1, _params(n_layer, n_embd, n_ff, vocab, tied))
    embd = int(file_bytes * vocab * n_embd / params)
    main_type = quant.upper().removesuffix("_S").removesuffix("_M").removesuffix("_L")  # Q4_K_M -> Q4_K
    compute = _compute_bytes(n_embd, n_ff, vocab, min(n_ubatch, n_ctx))
    kv = kv_cache_bytes(n_ctx, n_layer, n_head_kv, head_dim, KV_TYPES[kv_type])
    if main_type in REPACKED[cpu]:
        staging = int(file_bytes * n_embd * n_ff / params)
        return MemoryEstimate(file_bytes, kv, 0, compute, staging=staging, mapped=False)
    return MemoryEstimate(file_bytes - (0 if tied else embd), kv, 0, compute)


def _params(n_layer: int, n_embd: int, n_ff: int, vocab: int, tied: bool) -> int:
    """Parameters of a llama-style model: 4 attention + 3 feed-forward matrices a layer."""
    return n_layer * (4 * n_embd * n_embd + 3 * n_embd * n_ff) + vocab * n_embd * (1 if tied else 2)


def check_fits(need: MemoryEstimate, what: str) -> None:
    """Raise KitError when `need` does not fit in the memory this process may still use."""
    have, limiter = available_bytes()
    if need.total > have:
        raise KitError(
            f"{what} needs about {need.describe()}, but only {have / MB:.0f} MB is free "
            f"under {limiter}; choose a smaller model or quantization, or a shorter context (--ctx)"
        )


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux/Android: /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB since the last reset (or since start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # macOS: bytes; Linux: KB


def rss_mb() -> float:
    """Current resident memory of this process in MB."""
    return psutil.Process(os.getpid()).memory_info().rss / MB


MEASURE = """
import json, sys
from research import memory
from research.engine import Engine, EngineConfig, Sampling, conversation
path, n_ctx, kv_type = sys.argv[1], int(sys.argv[2]), sys.argv[3]
before = memory.rss_mb()
engine = Engine.load(path, EngineConfig(n_ctx=n_ctx, n_threads=2, kv_type=kv_type))
loaded = memory.rss_mb()
load_peak = memory.peak_rss_mb()
memory.reset_peak_rss()
question = "Summarize: " + "the quick brown fox jumps over the lazy dog " * 80
msgs = conversation(question[: 4 * min(512, n_ctx - 80)])
engine.answer(msgs, Sampling(temperature=0, max_tokens=32, ignore_eos=True))
answer_peak = memory.peak_rss_mb()
print(json.dumps({"runtime_mb": before, "loaded_mb": loaded, "peak_mb": max(load_peak, answer_peak),
                  "answer_peak_mb": answer_peak}))
"""


def measure(model, n_ctx: int = 4096, kv_type: str = "f16") -> dict:
    """Peak resident memory of a fresh process that loads `model` and answers one long question.

    A full prompt batch and 32 generated tokens: the engine's peak in chat use. Figures in MB
    (2**20 bytes), from the child's VmHWM, so nothing this process holds is counted.
    """
    import json
    import subprocess

    from research.models import resolve

    ref = resolve(model)
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ref.path), str(n_ctx), kv_type],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0:
        raise KitError(f"measuring {ref.path.name} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(models, n_ctx: int = 4096, kv_type: str = "f16") -> list[dict]:
    """Prediction against measurement for each model: one row each, with the error."""
    from research.gguf_info import read_gguf
    from research.models import resolve

    rows = []
    for model in models:
        ref = resolve(model)
        info = read_gguf(ref.path)
        est = estimate(info, n_ctx, kv_type)
        got = measure(ref, n_ctx, kv_type)
        rows.append(
            {
                "model": ref.path.name,
                "file_mb": info.file_size / MB,
                "n_ctx": n_ctx,
                "kv_type": kv_type,
                "load": est.load,
                **{f"{k}_mb": v / MB for k, v in est.as_dict().items() if k != "load"},
                "predicted_mb": est.total / MB,
                "measured_mb": got["peak_mb"],
                "error": est.total / MB / got["peak_mb"] - 1,
                "predicted_answering_mb": est.answering / MB,
                "measured_answering_mb": got["answer_peak_mb"],
                "error_answering": est.answering / MB / got["answer_peak_mb"] - 1,
            }
        )
    return rows


def format_compare(rows: list[dict]) -> str:
    """Prediction and measurement side by side, with the parts of the prediction (MB)."""
    lines = [
        f"{'model':36} {'ctx':>5} {'kv':5} {'file':>6} {'load':>4} {'weights':>7} {'repack':>6} {'KV':>5} "
        f"{'compute':>7} {'runtime':>7} {'predicted':>9} {'measured':>8} {'error':>6}  "
        f"{'answering: pred':>15} {'meas':>5} {'error':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r['model'][:36]:36} {r['n_ctx']:5} {r['kv_type']:5} {r['file_mb']:6.0f} {r['load']:>4} "
            f"{r['weights_mb']:7.0f} "
            f"{r['repacked_mb']:6.0f} {r['kv_cache_mb']:5.0f} {r['compute_mb']:7.0f} {r['runtime_mb']:7.0f} "
            f"{r['predicted_mb']:9.0f} {r['measured_mb']:8.0f} {r['error']:+6.1%}  "
            f"{r['predicted_answering_mb']:15.0f} {r['measured_answering_mb']:5.0f} "
            f"{r['error_answering']:+6.1%}"
        )
    return "\n".join(lines)

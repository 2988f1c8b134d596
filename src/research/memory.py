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

#: Compute buffers, logits and the Python side besides weights and KV cache; measured on the
#: bundled model at n_ctx 4096 as ~60 MB, rounded up so small models are not refused late.
OVERHEAD_BYTES = 128 * MB


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
    weights: int
    kv_cache: int
    overhead: int = OVERHEAD_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def describe(self) -> str:
        return (
            f"{self.total / MB:.0f} MB (weights {self.weights / MB:.0f} MB + KV cache "
            f"{self.kv_cache / MB:.0f} MB + {self.overhead / MB:.0f} MB working memory)"
        )


def estimate(info, n_ctx: int) -> MemoryEstimate:
    """Estimate the memory a GGUF (a research.gguf_info.GGUFInfo) needs at a context size."""
    n_layer = info.block_count or 0
    n_head = info.head_count or 1
    n_head_kv = info.head_count_kv or n_head
    head_dim = info.arch_value("attention.key_length") or ((info.embedding_length or 0) // n_head)
    tensor_bytes = sum(t.n_bytes for t in info.tensors)
    return MemoryEstimate(tensor_bytes, kv_cache_bytes(n_ctx, n_layer, n_head_kv, head_dim))


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

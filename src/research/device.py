"""This device: its CPU (model, SIMD features, cores) and its memory (what is free, what this
process holds), read from the operating system.

Linux and Android answer from /proc and /sys; elsewhere psutil and resource stand in where they
can. The memory model (research.memory) and the engine ask here; nothing here predicts.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
from pathlib import Path

import psutil

from research.units import MB

#: SIMD features llama.cpp's CPU kernels use, among the flags /proc/cpuinfo lists.
FEATURES = re.compile(r"^(avx\w*|fma|f16c|sse4_2|amx\w*|asimd\w*|fphp|sve\w*|i8mm|bf16|dotprod)$")


def cpu_features() -> list[str]:
    """SIMD features of this CPU that llama.cpp's kernels use (x86 flags or ARM Features)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return [platform.machine()]
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    return sorted({f for f in (m.group(1).split() if m else []) if FEATURES.match(f)})


def cpu_info() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC 7B13"), or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def default_threads() -> int:
    """Physical cores, at most 8: llama.cpp decodes fastest with one thread per core."""
    return max(1, min(psutil.cpu_count(logical=False) or os.cpu_count() or 1, 8))


def cpu_kind(features: list[str] | None = None) -> str:
    """Which repack rules apply: "x86-avx2", "x86-avx512", "arm-dotprod" or "other"."""
    if features is None:
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

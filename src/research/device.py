"""This device: its CPU (model, SIMD features, cores) and its memory (what is free, what this
process holds), read from the operating system.

Linux and Android answer from /proc and /sys; elsewhere psutil and resource stand in where they
can. The memory model (research.engine.memory) and the engine ask here; nothing here predicts.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def core_speeds(root: str | Path = "/") -> dict[int, int]:
    """Each online CPU's relative speed: its cpu_capacity (ARM big.LITTLE: 1024 for the fastest
    cores, a few hundred for the little ones), else its cpufreq maximum, else 1 for all.

    `core_speeds()` -> {0: 1024, 1: 1024} here; {0: 325, ..., 4: 1024, ...} on a phone.
    """
    cpus = Path(root) / "sys/devices/system/cpu"
    found = sorted(int(d.name[3:]) for d in cpus.glob("cpu[0-9]*") if d.name[3:].isdigit())
    online = _cpu_list(_text(cpus / "online")) or found
    for name in ("cpu_capacity", "cpufreq/cpuinfo_max_freq"):
        speeds = {n: _int(cpus / f"cpu{n}" / name) for n in online}
        if speeds and all(v for v in speeds.values()):
            return speeds
    return dict.fromkeys(online or range(os.cpu_count() or 1), 1)


def _cpu_list(text: str) -> list[int]:
    """ "0-3,6" -> [0, 1, 2, 3, 6] (the kernel's CPU list format)."""
    out = []
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += range(int(lo), int(hi or lo) + 1)
    return out


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(path: Path) -> int | None:
    text = _text(path).strip()
    return int(text) if text.isdigit() else None


#: A core counts as fast when its speed is at least this share of the fastest one's: the big and
#: prime cores of a phone (Snapdragon 888: Cortex-X1 1024, A78 ~860-960, A55 ~325-400).
FAST_SHARE = 0.6


def fast_cores(root: str | Path = "/") -> int:
    """How many cores are fast ones (all of them on a PC; the big cores on a big.LITTLE phone)."""
    speeds = core_speeds(root)
    top = max(speeds.values())
    return sum(1 for v in speeds.values() if v >= FAST_SHARE * top)


def default_threads(root: str | Path = "/") -> int:
    """Threads for the engine alone: one per fast physical core, at most 8.

    llama.cpp's threads all wait for the slowest at every step, so a thread on a little core (or a
    hyper-thread) slows the whole team down: only the fast cores count.
    """
    if Path(root) == Path("/"):
        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    else:  # a device described by a copy of its /sys (tests): its cores as listed there
        physical = len(core_speeds(root))
    return max(1, min(fast_cores(root), physical, 8))


def page_threads(root: str | Path = "/") -> tuple[int, str]:
    """Threads for the engine when a browser on the same device shows its answers, and why.

    The browser needs part of a core to paint the stream. With the page updating 20 times a
    second, a 2-core machine painted 46-58 t/s with 2 threads and 65-67 with 1, because
    llama.cpp's threads wait for the one the browser delays. At 4 updates a second
    (chat.STREAM_INTERVAL_S), with llama.cpp called from one thread (chat.ModelHost), 2 threads
    painted 74-104 t/s against 66-73 with 1 (`bench --page --threads 1,2 --reps 7`, two runs:
    88-99 % of the engine alone at 2 threads). So on up to two fast cores
    the engine takes them all; from three on, one is left to the browser, which costs the
    engine at most a third of its cores on a decode that is bound by memory, not by cores
    (not measured here: this machine has two).
    """
    engine = default_threads(root)
    speeds = core_speeds(root)
    n = engine - 1 if engine >= 3 else engine
    little = len(speeds) - fast_cores(root)
    why = f"{engine} fast core{'s' * (engine != 1)}"
    why += f" (and {little} slow ones left out)" if little else ""
    if n < engine:
        why += ", one left for the browser that shows the answers"
    else:
        why += ": the browser runs beside the model"
    return n, why


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


def read_bandwidth(threads: int, mib: int = 512, reps: int = 5) -> float:
    """Memory read bandwidth in GB/s: `threads` threads summing a 512 MiB array, best of `reps`."""
    import numpy as np

    a = np.ones(mib * MB // 8)
    chunks = np.array_split(a, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(reps):
            t = time.perf_counter()
            list(pool.map(np.sum, chunks))
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9

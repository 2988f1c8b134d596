"""A model read into memory, on huge pages: what llama-bench's mapped file has and the engine lacked.

Where llama.cpp repacks a file's weights for this CPU, the engine reads the file in instead of
mapping it (research.engine.memory.maps_file). llama.cpp then holds the weights in memory it
allocates itself (posix_memalign), which Linux backs with 4 KB pages unless a program asks for
huge ones: "madvise" is the usual setting of /sys/kernel/mm/transparent_hugepage/enabled. A
decode step reads every weight once, so on 4 KB pages it misses the TLB every 4 KB, where
llama-bench, which maps the file, reads a page cache the kernel may hold in 2 MB folios. Measured
on the Gemma-3-shaped file read in (2 threads, 14 interleaved 128-token runs, a throwaway loop of
llama_decode; issue 30's note): decode 4.4 % faster once its weights were on 2 MB pages, and as
fast as the mapped file.

So, after a model is read in, `advise` asks the kernel to back the anonymous regions the load
created and filled (llama.cpp's weight buffers, and the KV cache it clears) with 2 MB pages:
MADV_HUGEPAGE, then MADV_COLLAPSE (Linux 6.1 and later), which copies them into huge pages at
once. Regions the load did not fill (the compute buffers, touched only as used) are left alone:
collapsing them would make them resident, against the memory budget. Nothing is asked where
transparent huge pages are off or unknown (not Linux), with RESEARCH_HUGE_PAGES=0, or for a mapped
file; a refusal costs only the speed.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25


def _huge_size() -> int:
    """The kernel's huge page (2 MB on x86 and on ARM with 4 KB pages; 32 MB with 16 KB pages)."""
    try:
        return int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 2 << 20


HUGE = _huge_size()
#: Regions smaller than this are not worth a system call (llama.cpp's weight buffers are tens of MB).
MIN_BYTES = 8 << 20
SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
SMAPS = Path("/proc/self/smaps")


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    anonymous: bool  # private, writable, no file behind it
    rss: int  # bytes resident
    huge: int  # bytes on anonymous huge pages

    @property
    def size(self) -> int:
        return self.end - self.start


def regions(smaps: Path = SMAPS) -> list[Region]:
    """This process's memory regions, from /proc/self/smaps (empty where it cannot be read)."""
    out: list[Region] = []
    head: list[str] | None = None
    fields: dict[str, int] = {}

    def flush():
        if head is not None:
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            anonymous = len(head) < 6 and head[1].startswith("rw") and head[1].endswith("p")
            out.append(
                Region(lo, hi, anonymous, fields.get("Rss", 0) << 10, fields.get("AnonHugePages", 0) << 10)
            )

    try:
        text = smaps.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            flush()
            head, fields = parts, {}
        elif len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            fields[parts[0][:-1]] = int(parts[1])
    flush()
    return out


def available(setting: Path = SETTING) -> bool:
    """Whether this kernel gives huge pages to a program that asks ("always" or "madvise")."""
    if os.environ.get("RESEARCH_HUGE_PAGES", "1") == "0":
        return False
    try:
        return "[never]" not in setting.read_text()
    except OSError:
        return False


def snapshot() -> frozenset[tuple[int, int]]:
    """The regions as they are now (call before loading): advise() passes over these."""
    return frozenset((r.start, r.end) for r in regions()) if available() else frozenset()


def _filled_runs(libc, lo: int, hi: int) -> list[tuple[int, int]]:
    """The runs of 2 MB blocks within [lo, hi) (aligned) whose every page is resident (mincore)."""
    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    vec = (ctypes.c_ubyte * ((hi - lo) // page))()
    if libc.mincore(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), vec) != 0:
        return []
    full = (np.frombuffer(vec, np.uint8) & 1).reshape(-1, HUGE // page).all(axis=1)
    runs, start = [], None
    for i, ok in enumerate([*full.tolist(), False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            runs.append((lo + start * HUGE, lo + i * HUGE))
            start = None
    return runs


def advise(before: frozenset[tuple[int, int]]) -> int:
    """Ask for 2 MB pages on the parts of the anonymous regions made or grown since `before` that
    the load filled (2 MB blocks whose every page is resident: llama.cpp's weights and cleared KV
    cache, not its compute buffers, which the kernel merges into the same region); the bytes of
    those regions on huge pages afterwards (0 where nothing was asked)."""
    if not available():
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    chosen = [
        r
        for r in regions()
        if r.anonymous and (r.start, r.end) not in before and r.size >= MIN_BYTES and r.rss >= MIN_BYTES
    ]
    for r in chosen:
        lo, hi = -(-r.start // HUGE) * HUGE, r.end // HUGE * HUGE
        for a, b in _filled_runs(libc, lo, hi) if hi > lo else []:
            libc.madvise(a, b - a, MADV_HUGEPAGE)
            libc.madvise(a, b - a, MADV_COLLAPSE)  # EINVAL before Linux 6.1, EAGAIN when busy
    # madvise splits a region where its flags change: count every piece within the chosen ones.
    return sum(r.huge for r in regions() if any(c.start <= r.start and r.end <= c.end for c in chosen))

"""A model read into memory, on huge pages: what llama-bench's mapped file has and the engine lacked.

Where llama.cpp repacks a file's weights for this CPU, the engine reads the file in instead of
mapping it (research.engine.memory.maps_file). llama.cpp then holds the weights in memory it
allocates itself (posix_memalign), which Linux backs with 4 KB pages unless a program asks for
huge ones: "madvise" is the usual setting of /sys/kernel/mm/transparent_hugepage/enabled. A
decode step reads every weight once, so on 4 KB pages it misses the TLB every 4 KB, where
llama-bench, which maps the file, reads a page cache the kernel may hold in 2 MB folios. Measured
on the Gemma-3-shaped file read in (2 threads, interleaved 128-token runs of a bare llama_decode
loop; issue 30's note): decode 2.7-4.4 % faster once its weights were on huge pages.

So `snapshot` notes, before a model is read in, which huge-page-sized blocks of anonymous memory
are filled already, and `advise`, after, moves the blocks the load filled (llama.cpp's weight
buffers, and the KV cache it clears) onto huge pages with MADV_COLLAPSE (Linux 6.1 and later),
which copies them there at once. Filled means every page written by this process (pagemap:
present and mapped here alone): a compute buffer touched here and there, or memory only read (the
kernel's shared zero page), is not filled, and collapsing it would make it resident, against the
memory budget. MADV_HUGEPAGE is never set: it would stay on the memory, and a block freed later
could come back 2 MB at a time. Nothing is asked where transparent huge pages are off or unknown
(not Linux), with RESEARCH_HUGE_PAGES=0, or for a mapped file; any failure costs only the speed.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

MADV_COLLAPSE = 25


def _huge_size() -> int:
    """The kernel's huge page (2 MB on x86 and on ARM with 4 KB pages; 32 MB with 16 KB pages)."""
    try:
        return int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 2 << 20


HUGE = _huge_size()
#: Regions smaller than this are not worth a look (llama.cpp's weight buffers are tens of MB).
MIN_BYTES = 8 << 20
SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
SMAPS, PAGEMAP = Path("/proc/self/smaps"), Path("/proc/self/pagemap")
#: pagemap's bits of a page: in memory, and mapped by this process alone (never the zero page).
PRESENT, EXCLUSIVE = 1 << 63, 1 << 56


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


def _anonymous(head: list[str]) -> bool:
    """Private and writable, with no file: unnamed, or named by Android's allocators ([anon:...])."""
    private = head[1].startswith("rw") and head[1].endswith("p")
    return private and (len(head) < 6 or head[5].startswith("[anon:"))


def regions(smaps: Path = SMAPS) -> list[Region]:
    """This process's memory regions, from /proc/self/smaps (empty where it cannot be read)."""
    out: list[Region] = []
    head: list[str] | None = None
    fields: dict[str, int] = {}

    def flush():
        if head is not None:
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            out.append(
                Region(
                    lo, hi, _anonymous(head), fields.get("Rss", 0) << 10, fields.get("AnonHugePages", 0) << 10
                )
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


def filled_blocks(lo: int, hi: int, pagemap: Path = PAGEMAP) -> list[int]:
    """The huge-page-sized blocks of [lo, hi) (aligned) whose every page this process wrote."""
    import numpy as np

    lo, hi = -(-lo // HUGE) * HUGE, hi // HUGE * HUGE
    if hi <= lo:
        return []
    page = os.sysconf("SC_PAGE_SIZE")
    with open(pagemap, "rb") as f:
        raw = os.pread(f.fileno(), (hi - lo) // page * 8, lo // page * 8)
    bits = np.frombuffer(raw, np.uint64)
    if len(bits) * page != hi - lo:
        return []
    want = np.uint64(PRESENT | EXCLUSIVE)
    full = ((bits & want) == want).reshape(-1, HUGE // page).all(axis=1)
    return [lo + i * HUGE for i in np.flatnonzero(full).tolist()]


def _candidates() -> list[Region]:
    return [r for r in regions() if r.anonymous and r.size >= MIN_BYTES and r.rss >= HUGE]


def snapshot() -> frozenset[int]:
    """The blocks filled already (call before loading): advise() leaves them as they are."""
    try:
        if not available():
            return frozenset()
        return frozenset(b for r in _candidates() for b in filled_blocks(r.start, r.end))
    except (OSError, ValueError, ImportError):
        return frozenset()


def moved_blocks(before: frozenset[int]) -> list[int]:
    """Move the blocks filled since `before` onto huge pages; the addresses of those moved (none
    where the kernel gives no huge pages, has no MADV_COLLAPSE (before Linux 6.1) or has no free
    huge page left). Memory other threads filled meanwhile may be among them: resident already, it
    costs nothing more on huge pages."""
    try:
        if not available():
            return []
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return [
            block
            for r in _candidates()
            for block in filled_blocks(r.start, r.end)
            if block not in before and libc.madvise(block, HUGE, MADV_COLLAPSE) == 0
        ]
    except (OSError, ValueError, ImportError, AttributeError):
        return []


def advise(before: frozenset[int]) -> int:
    """moved_blocks(before), in bytes."""
    return len(moved_blocks(before)) * HUGE

"""A model read in goes on 2 MB pages, and nothing the load did not fill becomes resident."""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest

from research.engine import hugepages

SMAPS = """\
55d4a4574000-55d4a9c74000 rw-p 00000000 00:00 0                          [heap]
Size:              89088 kB
Rss:               80896 kB
AnonHugePages:         0 kB
7f28b7a00000-7f28c8a00000 rw-p 00000000 00:00 0
Size:             278528 kB
Rss:              278528 kB
AnonHugePages:    278528 kB
VmFlags: rd wr mr mw me ac hg
7f28d0089000-7f28d12a9000 r--p 00000000 fd:01 1234                       /usr/lib/libllama.so
Size:              18560 kB
Rss:                1024 kB
7f28e0000000-7f28e4000000 rw-s 00000000 00:01 77                         /dev/zero (deleted)
Rss:                   0 kB
"""


def test_smaps_is_read_region_by_region(tmp_path):
    f = tmp_path / "smaps"
    f.write_text(SMAPS)
    heap, weights, lib, shared = hugepages.regions(f)
    assert (heap.anonymous, weights.anonymous, lib.anonymous, shared.anonymous) == (False, True, False, False)
    assert weights.size == 0x11000000 and weights.rss == weights.huge == 278528 * 1024
    assert heap.rss == 80896 * 1024 and lib.huge == 0 and shared.rss == 0
    assert hugepages.regions(tmp_path / "missing") == []


@pytest.mark.parametrize(
    "setting, env, expected",
    [
        ("always [madvise] never\n", None, True),
        ("[always] madvise never\n", None, True),
        ("always madvise [never]\n", None, False),
        (None, None, False),  # no such file: not Linux, or no transparent huge pages
        ("always [madvise] never\n", "0", False),
    ],
)
def test_huge_pages_are_asked_for_only_where_the_kernel_gives_them(
    tmp_path, monkeypatch, setting, env, expected
):
    f = tmp_path / "enabled"
    if setting is not None:
        f.write_text(setting)
    if env is None:
        monkeypatch.delenv("RESEARCH_HUGE_PAGES", raising=False)
    else:
        monkeypatch.setenv("RESEARCH_HUGE_PAGES", env)
    assert hugepages.available(f) is expected


def _resident(addr: int, size: int) -> int:
    """Bytes of [addr, addr + size) in memory (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    vec = (ctypes.c_ubyte * (size // page))()
    assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) == 0
    return sum(b & 1 for b in vec) * page


def test_only_what_the_load_filled_goes_on_huge_pages():
    """A private anonymous region half written, as llama.cpp leaves its weights beside a compute
    buffer it has touched here and there: the written half is collapsed into 2 MB pages, and the
    other half stays out of memory (collapsing a block with one page in use fills all 2 MB of it,
    which over a compute buffer would break the memory budget)."""
    if not hugepages.available():
        pytest.skip("this kernel gives no transparent huge pages (or RESEARCH_HUGE_PAGES=0)")
    if hugepages.HUGE != 2 << 20:
        pytest.skip(f"sized for 2 MB huge pages; this kernel's are {hugepages.HUGE >> 20} MB")
    size, filled = 64 << 20, 32 << 20
    before = hugepages.snapshot()
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(region))
        region[:filled] = b"\1" * filled
        for block in range(filled, size, 2 << 20):
            region[block] = 1  # one page of each 2 MB block of the other half in use
        page = os.sysconf("SC_PAGE_SIZE")
        huge = hugepages.advise(before)
        assert _resident(addr, size) <= filled + (2 << 20) + (size - filled) // (2 << 20) * page
        assert bytes(region[:filled]) == b"\1" * filled  # the data survives the move
        if huge == 0:
            pytest.skip("the kernel refused MADV_COLLAPSE (before Linux 6.1, or no free 2 MB pages)")
        assert filled - (4 << 20) <= huge <= filled + (2 << 20)
    finally:
        region.close()


@pytest.mark.model
def test_a_model_read_in_is_on_huge_pages_and_answers_the_same(monkeypatch):
    """The bundled model read in (as the engine reads files whose weights this CPU repacks): its
    weights go on 2 MB pages, the same greedy answer comes out, and a mapped file is left alone."""
    from research.engine import EngineConfig, Sampling, conversation
    from research.engine.engine import Engine
    from research.models.catalog import resolve

    ref = resolve(None)
    answers, huge = {}, {}
    for kind, env, mmap_ in (("huge", "1", False), ("small", "0", False), ("mapped", "1", True)):
        monkeypatch.setenv("RESEARCH_HUGE_PAGES", env)
        engine = Engine.load(ref, EngineConfig(n_ctx=256, n_threads=1, use_mmap=mmap_))
        try:
            huge[kind] = engine.backend.huge_pages_mb
            answers[kind], _ = engine.answer(
                conversation("What is the capital of France?"), Sampling(temperature=0, max_tokens=12)
            )
        finally:
            engine.close()
    assert answers["huge"] == answers["small"] == answers["mapped"]
    assert huge["small"] == huge["mapped"] == 0.0
    if hugepages.available() and huge["huge"] == 0:
        pytest.skip("the kernel refused MADV_COLLAPSE (before Linux 6.1, or no free 2 MB pages)")
    if hugepages.available():
        # The weights (94 MB in the file) and the KV cache llama.cpp clears, less partial 2 MB blocks.
        assert huge["huge"] >= 0.8 * ref.path.stat().st_size / 2**20

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
7f28f0000000-7f28f4000000 rw-p 00000000 00:00 0                          [anon:scudo:primary]
Rss:               65536 kB
"""


def test_smaps_is_read_region_by_region(tmp_path):
    f = tmp_path / "smaps"
    f.write_text(SMAPS)
    heap, weights, lib, shared, android = hugepages.regions(f)
    kinds = (heap.anonymous, weights.anonymous, lib.anonymous, shared.anonymous, android.anonymous)
    assert kinds == (False, True, False, False, True)  # Android's allocators name their regions
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


def _rss() -> int:
    """This process's resident bytes (the shared zero page not counted)."""
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _can_collapse() -> bool:
    """Whether this kernel moves a written block onto a huge page when asked (MADV_COLLAPSE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    probe = mmap.mmap(-1, 4 * BLOCK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        probe[:] = b"\1" * len(probe)
        base = ctypes.addressof(ctypes.c_char.from_buffer(probe))
        block = -(-base // BLOCK) * BLOCK
        return libc.madvise(block, BLOCK, hugepages.MADV_COLLAPSE) == 0
    finally:
        probe.close()


BLOCK = 2 << 20


def test_only_what_the_load_filled_goes_on_huge_pages():
    """One region, as llama.cpp's buffers lie after a load: blocks filled before the load (left
    alone), blocks the load wrote (moved onto huge pages), a compute buffer's blocks with one page
    in use each, and blocks only read (the kernel's shared zero page). Moving either of the last two
    would make them resident: the process's memory must not grow."""
    if not hugepages.available():
        pytest.skip("this kernel gives no transparent huge pages (or RESEARCH_HUGE_PAGES=0)")
    if hugepages.HUGE != BLOCK:
        pytest.skip(f"sized for 2 MB huge pages; this kernel's are {hugepages.HUGE >> 20} MB")
    if "[always]" in hugepages.SETTING.read_text():
        pytest.skip("transparent huge pages 'always': a touched page brings its whole 2 MB block in")
    if not _can_collapse():
        pytest.skip("this kernel refuses MADV_COLLAPSE (before Linux 6.1, or no free 2 MB pages)")
    region = mmap.mmap(-1, 33 * BLOCK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        at = -(-base // BLOCK) * BLOCK - base  # the first whole block's offset in the region
        region[at : at + 4 * BLOCK] = b"\2" * (4 * BLOCK)  # filled before the load
        before = hugepages.snapshot()
        region[at + 4 * BLOCK : at + 16 * BLOCK] = b"\1" * (12 * BLOCK)  # the load's weights
        for block in range(16, 24):
            region[at + block * BLOCK] = 1  # a compute buffer: one page of each block in use
        page = os.sysconf("SC_PAGE_SIZE")
        assert sum(region[at + 24 * BLOCK : at + 32 * BLOCK : page]) == 0  # only read: the zero page
        rss = _rss()
        moved = hugepages.moved_blocks(before)
        assert _rss() - rss <= 2 * BLOCK  # nothing that was not in memory came in
        # Of this region, the load's 12 blocks (one may find no free huge page) and no other; blocks
        # other threads filled meanwhile elsewhere in the process may be moved too.
        here = [(b - base - at) // BLOCK for b in moved if base + at <= b < base + at + 32 * BLOCK]
        assert set(here) <= set(range(4, 16)) and len(here) >= 10, here
        assert bytes(region[at + 4 * BLOCK : at + 16 * BLOCK]) == b"\1" * (12 * BLOCK)  # data intact
        again = hugepages.moved_blocks(hugepages.snapshot())  # nothing new here: nothing moved
        assert not [b for b in again if base + at <= b < base + at + 32 * BLOCK]
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
    if not hugepages.available() or not _can_collapse():
        pytest.skip("no transparent huge pages here, or the kernel refuses MADV_COLLAPSE")
    # The weights (94 MB in the file) and the KV cache llama.cpp clears, less partial blocks, and
    # nothing much besides.
    file_mb = ref.path.stat().st_size / 2**20
    assert 0.8 * file_mb <= huge["huge"] <= file_mb + 32

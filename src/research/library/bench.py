"""How fast a large library answers: a synthetic library of N passages, built the real way, searched.

The target is retrieval under 100 ms a question over 100,000 passages on the kit's machine.
The text is synthetic (a Zipf-distributed vocabulary of 50,000 made-up words, seeded), written
to files that `library add` reads like any folder, so the bench measures the real path: reading,
cutting into passages, the bm25s index, then searches through Library.search (tokenizing the
question, scoring, reading the passages back). Printed, never asserted: the machine is shared.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from research import device, paths
from research.library import build as library_build
from research.library import store as lib
from research.units import MB

VOCABULARY = 50_000
PARAGRAPH_WORDS = 70  # ~500 characters: one passage per paragraph (MAX_PASSAGE_CHARS is 600)
PER_FILE = 500  # paragraphs, so passages, per file


def _words(rng, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = set()
    while len(out) < n:
        size = int(rng.integers(3, 10))
        out.add("".join(letters[i] for i in rng.integers(0, 26, size)))
    return sorted(out)


def write_corpus(folder: Path, n_passages: int, seed: int = 0) -> list[str]:
    """Files of synthetic paragraphs under `folder`; returns the vocabulary (most frequent first)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = _words(rng, VOCABULARY)
    ranks = np.arange(1, VOCABULARY + 1)
    p = 1 / ranks
    p /= p.sum()
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, n_passages, PER_FILE):
        count = min(PER_FILE, n_passages - start)
        ids = rng.choice(VOCABULARY, size=(count, PARAGRAPH_WORDS), p=p)
        text = "\n\n".join(" ".join(vocab[i] for i in row) + "." for row in ids)
        (folder / f"part{start // PER_FILE:05d}.txt").write_text(text)
    return vocab


def bench(n_passages: int = 100_000, queries: int = 200, keep: bool = False, progress: bool = True) -> dict:
    """Build a synthetic library of `n_passages`, search it `queries` times; the figures."""
    import numpy as np

    name = f"bench-{n_passages}"
    folder = paths.cache_dir() / "library-bench" / name
    shutil.rmtree(folder, ignore_errors=True)
    vocab = write_corpus(folder, n_passages)
    try:
        report = library_build.add(name, [folder], progress=progress)
        rss_before = device.rss_mb()
        t = time.perf_counter()
        library = lib.Library(name)
        library.search(vocab[100], 3)  # opens the index (memory-mapped) and warms the code
        open_s = time.perf_counter() - t
        rng = np.random.default_rng(1)
        # Questions of 2-6 words drawn as the text is (Zipf): frequent words have the longest
        # posting lists, so these are slower to score than questions of rare names.
        p = 1 / np.arange(1, VOCABULARY + 1)
        p /= p.sum()
        qs = [
            " ".join(vocab[i] for i in rng.choice(VOCABULARY, rng.integers(2, 7), p=p))
            for _ in range(queries)
        ]
        times, found = [], 0
        for q in qs:
            t = time.perf_counter()
            hits = library.search(q, 3)
            times.append(time.perf_counter() - t)
            found += bool(hits)
        times.sort()
        return {
            "passages": report.passages,
            "files": report.files,
            "build_s": report.seconds,
            "index_mb": library.size_bytes() / MB,
            "text_mb": sum(f.stat().st_size for f in folder.glob("*.txt")) / MB,
            "open_s": open_s,
            "queries": queries,
            "found": found,
            "median_ms": statistics.median(times) * 1000,
            "p95_ms": times[int(0.95 * (len(times) - 1))] * 1000,
            "max_ms": times[-1] * 1000,
            "rss_mb": device.rss_mb(),
            "index_rss_mb": device.rss_mb() - rss_before,
            "peak_rss_mb": device.peak_rss_mb(),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if not keep:
            lib.remove(name)


def format_bench(r: dict) -> str:
    return "\n".join(
        [
            f"synthetic library: {r['passages']:,} passages in {r['files']} files "
            f"({r['text_mb']:.0f} MB of text), built in {r['build_s']:.1f} s",
            f"index on disk: {r['index_mb']:.1f} MB (passages, offsets, bm25s arrays, manifest)",
            f"retrieval, {r['queries']} questions of 2-6 words, 3 passages each: "
            f"median {r['median_ms']:.1f} ms, 95th percentile {r['p95_ms']:.1f} ms, "
            f"slowest {r['max_ms']:.1f} ms (target: under 100 ms)",
            f"memory: the process holds {r['rss_mb']:.0f} MB resident ({r['index_rss_mb']:+.0f} MB from "
            f"opening and searching the index, memory-mapped); peak {r['peak_rss_mb']:.0f} MB while building",
            f"first search (opens the index): {r['open_s'] * 1000:.0f} ms",
        ]
    )

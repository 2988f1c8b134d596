"""`research bench`: prompt and generation speed of model files across thread counts.

The kit's chat path (research.measure.chat_timing) and, when it is built, llama.cpp's own llama-bench
(research.llamacpp.bench) on the same files, as rows in llama-bench's field names, so figures from
a phone, a laptop and llama-bench itself compare directly; printed as a table, written as JSON or
CSV. `bench --compare` (research.measure.compare) puts the two side by side on one file, and
`bench --idle` (research.measure.page) measures the chat page at rest.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from research import device
from research.llamacpp import bench as llama_bench
from research.llamacpp import build
from research.measure import chat_timing
from research.models.catalog import resolve
from research.units import MB


def sweep(
    models,
    threads: list[int],
    pp: int = 512,
    tg: int = 128,
    reps: int = 5,
    with_llama_bench: bool = True,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> list[dict]:
    """Rows for every model x thread count; llama-bench's own rows beside them when it is built."""
    threads = threads or [device.default_threads()]
    exe = build.tool_path("llama-bench") if with_llama_bench else None
    if with_llama_bench and exe is None:
        progress(
            "llama-bench is not built, so only the kit is measured "
            "(to add it: python -m research build --targets llama-bench)"
        )
    rows = []
    for model in models or [None]:
        ref = resolve(model)
        for t in threads:
            progress(f"{ref.path.name}: kit chat path, {t} threads, pp{pp}/tg{tg} x{reps} ...")
            rows += chat_timing.kit_rows(ref, t, pp, tg, reps)
        if exe is not None:
            progress(f"{ref.path.name}: llama-bench, threads {','.join(map(str, threads))} ...")
            rows += llama_bench.rows(exe, ref.path, threads, pp, tg, reps)
    return rows


def _file_mb(row: dict) -> str:
    """The size of a row's model file in MB, as every other table of the kit gives it; not llama-bench's
    `model_size`, which counts the tensors only (92.1 MB against the bundled file's 93.8)."""
    try:
        return f"{Path(row['model_filename']).stat().st_size / MB:8.1f}"
    except OSError:
        return f"{'?':>8}"


def format_rows(rows: list[dict]) -> str:
    """Rows as a table in llama-bench's spirit, with the kit's time to first token and memory."""
    lines = [
        f"{'model':34} {'file MB':>8} {'backend':11} {'threads':>7} {'test':>6} {'t/s':>16} "
        f"{'ttft ms':>8} {'peak MB':>8} {'CPU ms/tok':>10}"
    ]
    for r in rows:
        ttft = f"{r['ttft_ms']:8.0f}" if r.get("ttft_ms") is not None else f"{'':8}"
        rss = f"{r['peak_rss_mb']:8.0f}" if r.get("peak_rss_mb") is not None else f"{'':8}"
        cpu = f"{r['cpu_s_per_token'] * 1e3:10.2f}" if r.get("cpu_s_per_token") is not None else ""
        lines.append(
            f"{Path(r['model_filename']).name[:34]:34} {_file_mb(r)} {r['backend']:11} "
            f"{r['n_threads']:7} {r['test']:>6} {r['avg_ts']:9.1f} ± {r['stddev_ts']:5.1f} {ttft} {rss} {cpu}"
        )
    energy_rows = [r for r in rows if "energy_source" in r]
    if energy_rows:
        r = energy_rows[0]
        lines.append(
            "energy: "
            + (
                f"{r['energy_j_per_token']:.3f} J a token ({r['energy_source']})"
                if r.get("energy_j_per_token") is not None
                else f"not readable here: {r['energy_source']} (CPU time per token stands in for it)"
            )
        )
    return "\n".join(lines)


def write_csv(rows: list[dict], out) -> None:
    """Rows as CSV (a path or an open text file), FIELDS as columns; samples space-separated."""
    if isinstance(out, (str, os.PathLike)):
        with open(out, "w", newline="") as f:
            return write_csv(rows, f)
    w = csv.DictWriter(out, llama_bench.FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: " ".join(f"{x:g}" for x in v) if isinstance(v, list) else v for k, v in r.items()})

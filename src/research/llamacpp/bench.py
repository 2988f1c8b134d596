"""llama.cpp's own benchmark, llama-bench: built from the engine's llama.cpp, run, and its rows.

Rows in llama-bench's JSON field names (model_filename, n_prompt, n_gen, n_depth, n_threads,
avg_ts, samples_ts, build_commit, ...) are the kit's common format: the kit's own measurements
use them too (research.measure.chat_timing), so figures from a phone, a laptop and llama-bench compare.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from research import child
from research.llamacpp import build

#: llama-bench's JSON fields the kit's rows share, in llama-bench's order, then the kit's own.
FIELDS = (
    "build_commit",
    "cpu_info",
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "type_k",
    "type_v",
    "flash_attn",
    "load_mode",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test_time",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ns",
    "samples_ts",
    "backend",
    "test",
    "ttft_ms",
    "peak_rss_mb",
    "cpu_s_per_token",
    "energy_j_per_token",
)


def row(
    side: str,
    test: str,
    path: Path,
    threads: int,
    n_prompt: int,
    n_gen: int,
    samples: list[float],
    commit: str,
    n_depth: int = 0,
    **extra,
) -> dict:
    """One row in llama-bench's field names: `samples` are tokens/s of each repetition.

    `n_depth` is llama-bench's too: the tokens already in the KV cache when the test starts.
    """
    n = n_prompt + n_gen
    ns = [n / ts * 1e9 for ts in samples]
    return {
        "build_commit": commit,
        "model_filename": str(path),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_depth": n_depth,
        "n_threads": threads,
        "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "avg_ns": statistics.fmean(ns),
        "stddev_ns": statistics.stdev(ns) if len(ns) > 1 else 0.0,
        "avg_ts": statistics.fmean(samples),
        "stddev_ts": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "samples_ns": ns,
        "samples_ts": samples,
        "backend": side,
        "test": test,
        **extra,
    }


def run(exe: Path, path: Path, threads: str, *args: str, timeout: float = 1800) -> list[dict]:
    """llama-bench's JSON rows for `-m path -t threads` and `args`; a failure is one line."""
    cmd = [str(exe), "-m", str(path), "-t", threads, *args, "-o", "json"]
    return json.loads(child.run(cmd, f"llama-bench on {path.name}", timeout=timeout).stdout)


def once(exe: Path, path: Path, threads: int, pp: int, tg: int, depth: int = 0) -> dict[str, float]:
    """One repetition of llama-bench (with its warm-up): {"pp": t/s, "tg": t/s, "tg_depth": t/s}.

    pp and tg start from an empty context, as llama-bench's pp512 and tg128 do; "tg_depth" (only
    when `depth` > 0) generates after `depth` tokens in the KV cache (llama-bench -d), where the
    chat path's answers start: after the chat template's prompt.
    """
    out = {}
    for r in run(exe, path, str(threads), "-p", str(pp), "-n", str(tg), "-r", "1"):
        out["pp" if r["n_prompt"] and not r["n_gen"] else "tg"] = r["avg_ts"]
    if depth:
        [r] = run(exe, path, str(threads), "-p", "0", "-n", str(tg), "-d", str(depth), "-r", "1")
        out["tg_depth"] = r["avg_ts"]
    return out


def rows(exe: Path, path: Path, threads: list[int], pp: int, tg: int, reps: int) -> list[dict]:
    """llama-bench's own rows for one file and a thread sweep, cut to FIELDS."""
    out = []
    args = ("-p", str(pp), "-n", str(tg), "-r", str(reps))
    for r in run(exe, path, ",".join(map(str, threads)), *args, timeout=3600):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] and not r["n_gen"] else f"tg{r['n_gen']}"
        out.append({k: r.get(k) for k in FIELDS} | {"backend": "llama-bench", "test": test})
    return out


def find(progress=print) -> tuple[Path, str]:
    """llama-bench built from the installed llama-cpp-python's llama.cpp; builds it if needed."""
    ok, _ = build.check()
    exe = build.tool_path("llama-bench")
    if exe is None or not ok:
        progress(
            "Building llama-bench from the installed llama-cpp-python's source (several minutes, once) ..."
        )
        build.build(["llama-bench"], progress=progress)
        exe = build.tool_path("llama-bench")
    return exe, build.latest_record()["llama_cpp_commit"]

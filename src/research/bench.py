"""Speed of the kit's chat path, measured side by side with llama.cpp's own llama-bench.

Rows carry llama-bench's JSON field names where they overlap (model_filename, n_prompt, n_gen,
n_threads, avg_ts, stddev_ts, samples_ts, build_commit), so figures from a phone, a laptop and
llama-bench itself compare directly. The two sides run interleaved, one repetition each in
turn, because on a small shared machine the speed drifts by 10-20 % from minute to minute.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from research import build, energy, memory
from research.engine import Engine, EngineConfig, Sampling, conversation, default_threads
from research.errors import KitError
from research.models import resolve

#: A question of about 30 tokens with the chat template, for the time to first token.
QUESTION = "In which year did the Berlin Wall fall, and which two countries were reunited as a result?"
#: The request the decode speed is measured on: short, so the answer starts near llama-bench's.
TG_QUESTION = "Tell me a story."


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


def cpu_info() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC 7B13"), or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _row(
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


def _llama_bench(exe: Path, path: Path, threads: str, *args: str, timeout: float = 1800) -> list[dict]:
    """llama-bench's JSON rows for `-m path -t threads` and `args`; a failure is one line."""
    cmd = [str(exe), "-m", str(path), "-t", threads, *args, "-o", "json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise KitError(f"llama-bench failed on {path.name}: {last}")
    return json.loads(r.stdout)


def llama_bench_once(
    exe: Path, path: Path, threads: int, pp: int, tg: int, depth: int = 0
) -> dict[str, float]:
    """One repetition of llama-bench (with its warm-up): {"pp": t/s, "tg": t/s, "tg_depth": t/s}.

    pp and tg start from an empty context, as llama-bench's pp512 and tg128 do; "tg_depth" (only
    when `depth` > 0) generates after `depth` tokens in the KV cache (llama-bench -d), where the
    chat path's answers start: after the chat template's prompt.
    """
    out = {}
    for row in _llama_bench(exe, path, str(threads), "-p", str(pp), "-n", str(tg), "-r", "1"):
        out["pp" if row["n_prompt"] and not row["n_gen"] else "tg"] = row["avg_ts"]
    if depth:
        [row] = _llama_bench(exe, path, str(threads), "-p", "0", "-n", str(tg), "-d", str(depth), "-r", "1")
        out["tg_depth"] = row["avg_ts"]
    return out


def prompt_of(engine: Engine, n_tokens: int, salt: str) -> list[dict]:
    """A one-question conversation whose whole prompt is `n_tokens` long (or just under).

    `salt` starts the question so that no repetition reuses another's KV cache.
    """
    words = max(1, n_tokens - 40)
    for _ in range(8):
        msgs = conversation(f"{salt} " + "word " * words)
        n = engine.count_tokens(engine.format.render(msgs))
        if n == n_tokens:
            break
        words = max(1, words + n_tokens - n)
    return msgs


def kit_once(engine: Engine, pp: int, tg: int, rep: int) -> dict[str, float]:
    """One repetition through the chat path (Engine.stream, text pieces and all)."""
    _, stats = engine.answer(
        prompt_of(engine, pp, f"r{rep}x{time.time_ns()}"), Sampling(max_tokens=1, seed=rep)
    )
    pp_tokens, pp_ts = stats.prompt_eval_tokens, stats.prompt_eval_tokens / stats.ttft_s
    pp_depth = stats.prompt_tokens - stats.prompt_eval_tokens  # the chat template's reused start
    # Sampling as the page's defaults; the end-of-generation token is not allowed to stop it early.
    sampling = Sampling(max_tokens=tg, seed=rep, ignore_eos=True)
    # A short request: the answer starts as close to llama-bench's empty context as a chat can.
    _, stats = engine.answer(conversation(TG_QUESTION), sampling)
    if stats.completion_tokens < tg:
        raise KitError(
            f"the chat path stopped after {stats.completion_tokens} of {tg} tokens ({stats.stop_reason})"
        )
    return {
        "pp": pp_ts,
        "tg": stats.decode_tps,
        "pp_tokens": pp_tokens,
        "pp_depth": pp_depth,
        "tg_depth": stats.prompt_tokens,
        # What the tg answer cost: CPU-seconds of the process (and joules where readable), so
        # energy per token compares between models, quantizations and thread counts.
        "cpu_s": stats.cpu_s,
        "energy_j": stats.energy_j,
        "tg_tokens": stats.completion_tokens,
    }


def _model_fields(engine: Engine) -> dict:
    """The model and settings columns of a row, as llama-bench names and writes them."""
    info, backend = engine.info, engine.backend
    params = info.n_params
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    return {
        "cpu_info": cpu_info(),
        "model_type": f"{info.architecture} {size} {info.file_type_name or '?'}",
        "model_size": sum(t.n_bytes for t in info.tensors),
        "model_n_params": params,
        "n_batch": backend.n_batch,
        "n_ubatch": backend.n_ubatch,
        "type_k": backend.kv_type,
        "type_v": backend.kv_type,
        "flash_attn": int(backend.flash_attn),
        "load_mode": "mmap" if backend.mapped else "none",
    }


def kit_rows(
    model=None, threads: int | None = None, pp: int = 512, tg: int = 128, reps: int = 5
) -> list[dict]:
    """pp and tg rows of the kit's chat path at one thread count, in llama-bench's field names.

    Both rows also carry the median time to first token of a ~30-token question (`ttft_ms`) and
    the process's peak resident memory from loading to the last repetition (`peak_rss_mb`).
    """
    ref = resolve(model)
    threads = threads or default_threads()
    config = EngineConfig(n_ctx=max(2048, pp + tg + 64), n_threads=threads)
    memory.reset_peak_rss()
    engine = Engine.load(ref, config)
    try:
        kit_once(engine, min(pp, 64), 8, -1)
        runs = [kit_once(engine, pp, tg, rep) for rep in range(reps)]
        ttft = ttft_parts(engine, reps=3)["ttft_s"]
        extra = _model_fields(engine) | {"ttft_ms": ttft * 1e3, "peak_rss_mb": memory.peak_rss_mb()}
        extra |= cost_fields(runs)
    finally:
        engine.close()
    commit = (build.latest_record() or {}).get("llama_cpp_commit", "unknown")
    return [
        _row(
            "kit",
            f"pp{pp}",
            ref.path,
            threads,
            runs[-1]["pp_tokens"],
            0,
            [r["pp"] for r in runs],
            commit,
            runs[-1]["pp_depth"],
            **extra,
        ),
        _row(
            "kit",
            f"tg{tg}",
            ref.path,
            threads,
            0,
            tg,
            [r["tg"] for r in runs],
            commit,
            runs[-1]["tg_depth"],
            **extra,
        ),
    ]


def cost_fields(runs: list[dict]) -> dict:
    """CPU-seconds (and joules, where the device can tell) per generated token, over the tg runs."""
    tokens = sum(r["tg_tokens"] for r in runs) or 1
    joules = [r["energy_j"] for r in runs]
    known = all(j is not None for j in joules)
    return {
        "cpu_s_per_token": sum(r["cpu_s"] for r in runs) / tokens,
        "energy_j_per_token": sum(joules) / tokens if known else None,
        "energy_source": energy.default().source if known else energy.default().why,
    }


def llama_bench_rows(exe: Path, path: Path, threads: list[int], pp: int, tg: int, reps: int) -> list[dict]:
    """llama-bench's own rows for one file and a thread sweep, cut to FIELDS."""
    rows = []
    args = ("-p", str(pp), "-n", str(tg), "-r", str(reps))
    for row in _llama_bench(exe, path, ",".join(map(str, threads)), *args, timeout=3600):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] and not row["n_gen"] else f"tg{row['n_gen']}"
        rows.append({k: row.get(k) for k in FIELDS} | {"backend": "llama-bench", "test": test})
    return rows


def sweep(
    models,
    threads: list[int],
    pp: int = 512,
    tg: int = 128,
    reps: int = 5,
    llama_bench: bool = True,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> list[dict]:
    """Rows for every model x thread count; llama-bench's own rows beside them when it is built."""
    threads = threads or [default_threads()]
    exe = build.tool_path("llama-bench") if llama_bench else None
    if llama_bench and exe is None:
        progress(
            "llama-bench is not built, so only the kit is measured "
            "(to add it: python -m research build --targets llama-bench)"
        )
    rows = []
    for model in models or [None]:
        ref = resolve(model)
        for t in threads:
            progress(f"{ref.path.name}: kit chat path, {t} threads, pp{pp}/tg{tg} x{reps} ...")
            rows += kit_rows(ref, t, pp, tg, reps)
        if exe is not None:
            progress(f"{ref.path.name}: llama-bench, threads {','.join(map(str, threads))} ...")
            rows += llama_bench_rows(exe, ref.path, threads, pp, tg, reps)
    return rows


def format_rows(rows: list[dict]) -> str:
    """Rows as a table in llama-bench's spirit, with the kit's time to first token and memory."""
    lines = [
        f"{'model':34} {'size MB':>8} {'backend':11} {'threads':>7} {'test':>6} {'t/s':>16} "
        f"{'ttft ms':>8} {'peak MB':>8} {'CPU ms/tok':>10}"
    ]
    for r in rows:
        ttft = f"{r['ttft_ms']:8.0f}" if r.get("ttft_ms") is not None else f"{'':8}"
        rss = f"{r['peak_rss_mb']:8.0f}" if r.get("peak_rss_mb") is not None else f"{'':8}"
        cpu = f"{r['cpu_s_per_token'] * 1e3:10.2f}" if r.get("cpu_s_per_token") is not None else ""
        lines.append(
            f"{Path(r['model_filename']).name[:34]:34} {r['model_size'] / 1e6:8.1f} {r['backend']:11} "
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
    w = csv.DictWriter(out, FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: " ".join(f"{x:g}" for x in v) if isinstance(v, list) else v for k, v in r.items()})


def paired_ratio(kit: list[float], reference: list[float]) -> float:
    """Median of kit[i] / reference[i]: `paired_ratio([90, 120], [100, 120])` -> 0.95."""
    return statistics.median(k / r for k, r in zip(kit, reference, strict=True))


def read_bandwidth(threads: int, mib: int = 512, reps: int = 5) -> float:
    """Memory read bandwidth in GB/s: `threads` threads summing a 512 MiB array, best of `reps`."""
    import numpy as np

    a = np.ones(mib * 2**20 // 8)
    chunks = np.array_split(a, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(reps):
            t = time.perf_counter()
            list(pool.map(np.sum, chunks))
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def ttft_parts(engine: Engine, reps: int = 5) -> dict:
    """Time to first token of a ~30-token question, with its parts (medians, seconds)."""
    rows = []
    for i in range(reps):
        rows.append(engine.answer(conversation(f"({i}) {QUESTION}"), Sampling(max_tokens=1, seed=i))[1])
    med = lambda key: statistics.median(getattr(s, key) for s in rows)  # noqa: E731
    parts = {k: med(k) for k in ("ttft_s", "format_s", "tokenize_s", "prompt_eval_s", "first_sample_s")}
    parts["other_s"] = max(parts["ttft_s"] - sum(v for k, v in parts.items() if k != "ttft_s"), 0.0)
    parts["prompt_tokens"] = rows[-1].prompt_tokens
    return parts


#: The context size of the cold start and the page's process: both commands' default.
APP_CTX = 4096


def cold_start(model: str | None, n_ctx: int = APP_CTX) -> dict:
    """Wall time of `python -m research chat -p ... --json` in a fresh process, and its own figures."""
    cmd = [
        sys.executable,
        "-m",
        "research",
        "chat",
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--ctx",
        str(n_ctx),
        "--json",
        "-p",
        QUESTION,
    ] + (["--model", str(model)] if model else [])
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise KitError(f"cold start failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out = json.loads(r.stdout)
    return {"command_to_answer_s": wall, "ttft_s": out["ttft_s"], "peak_rss_mb": out["peak_rss_mb"]}


def page_memory(model: str | None, n_ctx: int = APP_CTX, timeout: float = 300) -> dict:
    """Peak resident memory of the chat page's process after it answered QUESTION.

    The page (`python -m research demo`, on a free loopback port) holds the same engine as
    `research chat` plus Gradio, its web server and the page's state; its peak beside the cold
    start's (the engine alone, same model, context and question) is what the page adds on top.
    """
    import socket
    import tempfile
    import urllib.request

    import psutil
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "research", "demo", "--port", str(port), "--ctx", str(n_ctx)]
    cmd += ["--model", str(model)] if model else []
    with tempfile.TemporaryDirectory(prefix="research-page-") as tmp:
        log = Path(tmp) / "page.log"
        # Its own ratings file and Gradio folder: measuring must not write into the user's.
        env = os.environ | {"RESEARCH_RATINGS_FILE": str(Path(tmp) / "r.jsonl"), "GRADIO_TEMP_DIR": tmp}
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            t, deadline = time.perf_counter(), time.monotonic() + timeout
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    last = (log.read_text().strip().splitlines() or ["no output"])[-1]
                    raise KitError(f"the chat page did not come up for measuring: {last}")
                try:
                    urllib.request.urlopen(url, timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.2)
            up = time.perf_counter() - t
            Client(url, verbose=False).predict(QUESTION, temperature=0, max_tokens=16, api_name="/ask")
            try:  # the peak (Linux, Android); elsewhere the resident memory now
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                status = f"VmHWM: {psutil.Process(proc.pid).memory_info().rss // 1024} kB"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return {"peak_rss_mb": peak * 1024 / memory.MB, "start_s": up, "n_ctx": n_ctx}


def find_llama_bench(progress=print) -> tuple[Path, str]:
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


def compare(
    model: str | None = None,
    threads: int | None = None,
    pp: int = 512,
    tg: int = 128,
    reps: int = 5,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> dict:
    """Run llama-bench and the kit's chat path on the same file and threads; figures and ratios.

    A chat answer never starts from an empty context: the chat template's prompt (about 30 tokens
    with SmolLM2's default system prompt) is in the KV cache first, and every decode step attends
    to it. On a small model that costs llama.cpp itself several per cent (SmolLM2-135M here: tg128
    151 t/s from an empty context, 140 at depth 34, 107 at 256). So llama-bench also runs tg at
    the chat path's depth (-d), and the decode ratio compares the two at the same depth; the ratio
    against llama-bench's plain tg128 is kept beside it.
    """
    ref = resolve(model)
    exe, commit = find_llama_bench(progress)
    threads = threads or default_threads()
    engine = Engine.load(ref, EngineConfig(n_ctx=max(2048, pp + tg + 64), n_threads=threads))
    depth = kit_once(engine, min(pp, 64), 8, -1)["tg_depth"]  # warm-up, as llama-bench does its own
    progress(
        f"Comparing on {ref.path.name}, {threads} threads, pp{pp}/tg{tg}, {reps} repetitions, "
        f"interleaved; the chat path's answers start at depth {depth}"
    )
    lb, kit = {"pp": [], "tg": [], "tg_depth": []}, {"pp": [], "tg": []}
    for rep in range(reps):
        # Alternate which side goes first (ABBA): a machine that speeds up or slows down over the
        # seconds of a pair then favours each side equally often instead of always the same one.
        one = kit_once(engine, pp, tg, rep) if rep % 2 else None
        for k, v in llama_bench_once(exe, ref.path, threads, pp, tg, depth).items():
            lb[k].append(v)
        one = one or kit_once(engine, pp, tg, rep)
        kit["pp"].append(one["pp"])
        kit["tg"].append(one["tg"])
        progress(
            f"  rep {rep + 1}/{reps}: llama-bench pp {lb['pp'][-1]:.1f} tg {lb['tg'][-1]:.1f} "
            f"tg@d{depth} {lb['tg_depth'][-1]:.1f} · kit pp {kit['pp'][-1]:.1f} tg {kit['tg'][-1]:.1f} t/s"
        )
    fields = _model_fields(engine)
    rows = [
        _row("llama-bench", f"pp{pp}", ref.path, threads, pp, 0, lb["pp"], commit),
        _row("llama-bench", f"tg{tg}", ref.path, threads, 0, tg, lb["tg"], commit),
        _row("llama-bench", f"tg{tg}@d{depth}", ref.path, threads, 0, tg, lb["tg_depth"], commit, depth),
        _row("kit", f"pp{pp}", ref.path, threads, one["pp_tokens"], 0, kit["pp"], commit, one["pp_depth"])
        | fields,
        _row("kit", f"tg{tg}@d{depth}", ref.path, threads, 0, tg, kit["tg"], commit, depth) | fields,
    ]
    parts = ttft_parts(engine)
    b = engine.backend
    estimate = memory.estimate(engine.info, b.n_ctx, b.kv_type, n_ubatch=b.n_ubatch, mapped=b.mapped)
    engine_peak = memory.peak_rss_mb()
    bandwidth = read_bandwidth(threads)
    # Each step reads every weight once (an untied token_embd only a row) and the KV cache up to
    # its position: depth + tg/2 on average.
    read = memory.estimate(engine.info, b.n_ctx, b.kv_type, mapped=True).weights
    bytes_per_token = read + estimate.kv_cache * (depth + tg / 2) / b.n_ctx
    roofline = bandwidth * 1e9 / bytes_per_token
    engine.close()
    cold = cold_start(model)
    progress("Measuring the chat page's process (Gradio and its server around the same engine) ...")
    page = page_memory(model)
    mean = statistics.fmean
    pairs = lambda a, b: [x / y for x, y in zip(a, b, strict=True)]  # noqa: E731
    return {
        "model": ref.id,
        "model_filename": str(ref.path),
        "n_threads": threads,
        "llama_cpp_commit": commit,
        "tg_depth": depth,
        # Median of the ratios of back-to-back pairs: the machine's speed drifts from minute to
        # minute, and a pair measured seconds apart shares the drift.
        "ratio_tg": paired_ratio(kit["tg"], lb["tg_depth"]),
        "ratio_tg_depth0": paired_ratio(kit["tg"], lb["tg"]),
        "ratio_pp": paired_ratio(kit["pp"], lb["pp"]),
        # The spread of the paired ratios: on a shared 2-core machine a single pair can be off by
        # 10 %, so a ratio is only as good as the range its pairs fall in.
        "ratio_tg_pairs": pairs(kit["tg"], lb["tg_depth"]),
        "ratio_tg_depth0_pairs": pairs(kit["tg"], lb["tg"]),
        "ratio_pp_pairs": pairs(kit["pp"], lb["pp"]),
        "ratio_tg_of_means": mean(kit["tg"]) / mean(lb["tg_depth"]),
        "ratio_pp_of_means": mean(kit["pp"]) / mean(lb["pp"]),
        "rows": rows,
        "roofline": {
            "read_bandwidth_gbs": bandwidth,
            "bytes_per_token": bytes_per_token,
            "roofline_tps": roofline,
            "ratio_kit": mean(kit["tg"]) / roofline,
            "ratio_llama_bench": mean(lb["tg_depth"]) / roofline,
        },
        "ttft": parts,
        "memory": {
            "peak_rss_mb": engine_peak,
            "file_mb": ref.path.stat().st_size / memory.MB,
            "kv_cache_mb": estimate.kv_cache / memory.MB,
            "budget_mb": ref.path.stat().st_size / memory.MB + estimate.kv_cache / memory.MB + 100,
        },
        "cold_start": cold,
        # What the page's process adds on top of the engine: same model, context and question.
        "page": page | {"adds_mb": page["peak_rss_mb"] - cold["peak_rss_mb"]},
        "machine": {"cpu_count": os.cpu_count(), "cpu_features": build.cpu_features()},
    }


def format_compare(r: dict) -> str:
    """The comparison as a table of figures and ratios."""

    def row(side: str, kind: str, depth: int | None = None) -> dict:
        return next(
            x
            for x in r["rows"]
            if x["backend"] == side and x["test"][:2] == kind and depth in (None, x["n_depth"])
        )

    kit_pp, kit_tg = row("kit", "pp"), row("kit", "tg")
    lb_pp, lb_tg, lb_tg_depth = (
        row("llama-bench", "pp"),
        row("llama-bench", "tg", 0),
        row("llama-bench", "tg", kit_tg["n_depth"]),
    )
    lines = [
        f"{r['model']} · {r['n_threads']} threads · llama.cpp {r['llama_cpp_commit']} · kit: "
        f"micro-batch {kit_pp.get('n_ubatch', '?')}, {kit_pp.get('load_mode', '?')} load "
        "(llama-bench: its defaults, 512 and mmap)",
        "",
        f"{'test':12} {'llama-bench t/s':>16} {'kit chat path t/s':>18} {'ratio':>7}  "
        "(median of paired reps; their range)",
    ]
    for label, lb, k, key in (
        (lb_pp["test"], lb_pp, kit_pp, "pp"),
        (lb_tg_depth["test"], lb_tg_depth, kit_tg, "tg"),
        (f"{lb_tg['test']}@d0", lb_tg, kit_tg, "tg_depth0"),
    ):
        pairs = r.get(f"ratio_{key}_pairs") or [r[f"ratio_{key}"]]
        lines.append(
            f"{label:12} {lb['avg_ts']:8.1f} ± {lb['stddev_ts']:5.1f} {k['avg_ts']:10.1f} ± "
            f"{k['stddev_ts']:5.1f} {r[f'ratio_{key}']:7.1%}  ({min(pairs):.0%}-{max(pairs):.0%})"
        )
    roof, t, m, c = r["roofline"], r["ttft"], r["memory"], r["cold_start"]
    lines += [
        f"(the chat path's answers start after its {r['tg_depth']}-token prompt: the tg ratio compares "
        f"llama-bench at that depth; the last line, against an empty context, is llama-bench's plain "
        f"{lb_tg['test']})",
        "",
        f"roofline: read bandwidth {roof['read_bandwidth_gbs']:.1f} GB/s / "
        f"{roof['bytes_per_token'] / 1e6:.0f} MB "
        f"per token = {roof['roofline_tps']:.0f} t/s; kit decode at {roof['ratio_kit']:.0%} of it, "
        f"llama-bench at {roof['ratio_llama_bench']:.0%}",
        f"time to first token ({t['prompt_tokens']} tokens): {t['ttft_s'] * 1e3:.1f} ms = formatting "
        f"{t['format_s'] * 1e3:.2f} + tokenization {t['tokenize_s'] * 1e3:.2f} + prompt evaluation "
        f"{t['prompt_eval_s'] * 1e3:.1f} + first sample {t['first_sample_s'] * 1e3:.2f} + other "
        f"{t['other_s'] * 1e3:.2f} ms",
        f"memory: engine peak {m['peak_rss_mb']:.0f} MB; budget file {m['file_mb']:.0f} + KV cache "
        f"{m['kv_cache_mb']:.0f} + 100 = {m['budget_mb']:.0f} MB",
        f"cold start: command to answer {c['command_to_answer_s']:.2f} s (its ttft {c['ttft_s']:.2f} s, "
        f"peak {c['peak_rss_mb']:.0f} MB)",
    ]
    if "page" in r:
        p = r["page"]
        lines.append(
            f"chat page: its process peaks at {p['peak_rss_mb']:.0f} MB after one answer (context "
            f"{p['n_ctx']}), the engine alone (the cold start) at {c['peak_rss_mb']:.0f} MB: the page "
            f"adds {p['adds_mb']:.0f} MB (Gradio, its web server); up in {p['start_s']:.1f} s"
        )
    return "\n".join(lines)

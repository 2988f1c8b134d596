"""`research bench --compare`: the kit's chat path side by side with llama-bench on one file.

The two sides run interleaved, one repetition each in turn and the side that goes first
alternating (ABBA), because a small shared machine drifts by 10-20 % from minute to minute; the
ratios are medians of the back-to-back pairs, kept with their range. Beside them: the memory
bandwidth roofline, the parts of the time to first token, the peak memory against the engine's
budget, the cold start, and what the chat page's process adds.
"""

from __future__ import annotations

import os
import statistics
import sys

from research import device
from research.engine import Engine, EngineConfig, memory, native
from research.errors import KitError
from research.llamacpp import bench as llama_bench
from research.llamacpp.bench import row
from research.measure import page as page_bench
from research.measure.chat_timing import check_pp, cold_start, kit_once, model_fields, ttft_parts
from research.models.catalog import resolve
from research.units import MB


def paired_ratio(kit: list[float], reference: list[float]) -> float:
    """Median of kit[i] / reference[i]: `paired_ratio([90, 120], [100, 120])` -> 0.95."""
    return statistics.median(k / r for k, r in zip(kit, reference, strict=True))


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
    exe, commit = llama_bench.find(progress)
    threads = threads or device.default_threads()
    engine = Engine.load(ref, EngineConfig(n_ctx=max(2048, pp + tg + 64), n_threads=threads))
    try:
        check_pp(engine, pp)
    except KitError:
        engine.close()
        raise
    depth = kit_once(engine, min(pp, 64), 8, -1)["tg_depth"]  # warm-up, as llama-bench does its own
    progress(
        f"Comparing on {ref.path.name}, {threads} threads, pp{pp}/tg{tg}, {reps} repetitions, "
        f"interleaved; the chat path's answers start at depth {depth}"
    )
    lb, kit, one = _interleaved(engine, exe, ref, threads, pp, tg, depth, reps, progress)
    fields = model_fields(engine)
    c_step = engine.backend.native and native.step() is not None
    rows = [
        row("llama-bench", f"pp{pp}", ref.path, threads, pp, 0, lb["pp"], commit),
        row("llama-bench", f"tg{tg}", ref.path, threads, 0, tg, lb["tg"], commit),
        row("llama-bench", f"tg{tg}@d{depth}", ref.path, threads, 0, tg, lb["tg_depth"], commit, depth),
        row("kit", f"pp{pp}", ref.path, threads, one["pp_tokens"], 0, kit["pp"], commit, one["pp_depth"])
        | fields,
        row("kit", f"tg{tg}@d{depth}", ref.path, threads, 0, tg, kit["tg"], commit, depth) | fields,
    ]
    parts = ttft_parts(engine)
    engine_peak = device.peak_rss_mb()  # before the bandwidth's 512 MiB array
    estimate, bandwidth, bytes_per_token, roofline = _roofline(engine, threads, depth, tg)
    engine.close()
    cold = cold_start(model)
    progress("Measuring the chat page's process (Gradio and its server around the same engine) ...")
    page = page_bench.page_memory(model)
    mean = statistics.fmean
    return {
        "model": ref.id,
        "model_filename": str(ref.path),
        "n_threads": threads,
        "llama_cpp_commit": commit,
        "tg_depth": depth,
        # Which decode loop the chat path ran: step.c through research.engine.native, or Python.
        "decode_loop": "C (research/engine/step.c)" if c_step else f"Python ({native.why() or 'off'})",
        **_ratios(kit, lb),
        "step_ms": step_ms(kit["parts"], lb["tg_depth"]),
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
            "file_mb": ref.path.stat().st_size / MB,
            "kv_cache_mb": estimate.kv_cache / MB,
            "budget_mb": memory.budget(ref.path.stat().st_size, estimate.kv_cache) / MB,
        },
        "cold_start": cold,
        # What the page's process adds on top of the engine: same model, context and question.
        "page": page | {"adds_mb": page["peak_rss_mb"] - cold["peak_rss_mb"]},
        "machine": {"cpu_count": os.cpu_count(), "cpu_features": device.cpu_features()},
    }


def _ratios(kit: dict, lb: dict) -> dict:
    """The chat path against llama-bench: paired ratios, their spread, ratios of means."""
    mean = statistics.fmean

    def pairs(a, b):
        return [x / y for x, y in zip(a, b, strict=True)]

    return {
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
    }


def step_ms(parts: list[dict], reference_tps: list[float]) -> dict | None:
    """Milliseconds a decode step, by part, summed over the repetitions: llama_decode, the sampler
    chain, the free signals, and the rest of the engine's loop (detokenization, stop strings, the
    reader of the stream), against llama-bench's whole step at the same depth. None without parts."""
    if not parts:
        return None
    steps = sum(p["steps"] for p in parts)
    out = {k: sum(p[k] for p in parts) * 1e3 / steps for k in ("wall_s", "decode_s", "sample_s", "signal_s")}
    out["loop_s"] = out["wall_s"] - out["decode_s"] - out["sample_s"] - out["signal_s"]
    out["llama_bench_s"] = 1e3 / statistics.fmean(reference_tps)
    return {k.removesuffix("_s"): v for k, v in out.items()}


def _interleaved(engine, exe, ref, threads: int, pp: int, tg: int, depth: int, reps: int, progress):
    """llama-bench and the kit's chat path, `reps` times each, interleaved: (llama-bench's figures,
    the kit's, the kit's last run)."""
    lb, kit = {"pp": [], "tg": [], "tg_depth": []}, {"pp": [], "tg": [], "parts": []}
    for rep in range(reps):
        # Alternate which side goes first (ABBA): a machine that speeds up or slows down over the
        # seconds of a pair then favours each side equally often instead of always the same one.
        one = kit_once(engine, pp, tg, rep) if rep % 2 else None
        for k, v in llama_bench.once(exe, ref.path, threads, pp, tg, depth).items():
            lb[k].append(v)
        one = one or kit_once(engine, pp, tg, rep)
        kit["pp"].append(one["pp"])
        kit["tg"].append(one["tg"])
        if one.get("step_parts"):
            kit["parts"].append(one["step_parts"])
        progress(
            f"  rep {rep + 1}/{reps}: llama-bench pp {lb['pp'][-1]:.1f} tg {lb['tg'][-1]:.1f} "
            f"tg@d{depth} {lb['tg_depth'][-1]:.1f} · kit pp {kit['pp'][-1]:.1f} tg {kit['tg'][-1]:.1f} t/s"
        )
    return lb, kit, one


def _roofline(engine, threads: int, depth: int, tg: int):
    """(memory estimate, read bandwidth GB/s, bytes read per decoded token, roofline t/s)."""
    b = engine.backend
    estimate = memory.estimate(engine.info, b.n_ctx, b.kv_type, n_ubatch=b.n_ubatch, mapped=b.mapped)
    bandwidth = device.read_bandwidth(threads)
    # Each step reads every weight once (an untied token_embd only a row) and the KV cache up to
    # its position: depth + tg/2 on average.
    read = memory.estimate(engine.info, b.n_ctx, b.kv_type, mapped=True).weights
    bytes_per_token = read + estimate.kv_cache * (depth + tg / 2) / b.n_ctx
    roofline = bandwidth * 1e9 / bytes_per_token
    return estimate, bandwidth, bytes_per_token, roofline


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
    huge = kit_pp.get("huge_pages_mb")
    on_huge = (
        f" ({huge:.0f} MB moved onto huge pages)"
        if kit_pp.get("load_mode") == "none" and huge is not None
        else ""
    )
    lines = [
        f"{r['model']} · {r['n_threads']} threads · llama.cpp {r['llama_cpp_commit']} · kit: "
        f"micro-batch {kit_pp.get('n_ubatch', '?')}, {kit_pp.get('load_mode', '?')} load{on_huge} "
        f"(llama-bench: its defaults, 512 and mmap); decode loop: {r.get('decode_loop', '?')}",
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
    if r.get("step_ms"):
        s = r["step_ms"]
        lines.append(
            f"a decode step, ms: llama_decode {s['decode']:.3f} + sampler chain {s['sample']:.3f} + free "
            f"signals {s['signal']:.3f} + the kit's loop {s['loop']:.3f} = {s['wall']:.3f} "
            f"(llama-bench's whole step at the same depth: {s['llama_bench']:.3f})"
        )
    lines += [
        f"(the chat path's answers start after its {r['tg_depth']}-token prompt: the tg ratio compares "
        f"llama-bench at that depth; the last line, against an empty context, is llama-bench's plain "
        f"{lb_tg['test']})",
        "",
        f"roofline: read bandwidth {roof['read_bandwidth_gbs']:.1f} GB/s / "
        f"{roof['bytes_per_token'] / MB:.0f} MB "
        f"per token = {roof['roofline_tps']:.0f} t/s; kit decode at {roof['ratio_kit']:.0%} of it, "
        f"llama-bench at {roof['ratio_llama_bench']:.0%}",
        f"time to first token ({t['prompt_tokens']} tokens): {t['ttft_s'] * 1e3:.1f} ms = formatting "
        f"{t['format_s'] * 1e3:.2f} + tokenization {t['tokenize_s'] * 1e3:.2f} + prompt evaluation "
        f"{t['prompt_eval_s'] * 1e3:.1f} + first sample {t['first_sample_s'] * 1e3:.2f} + other "
        f"{t['other_s'] * 1e3:.2f} ms",
        f"memory: engine peak {m['peak_rss_mb']:.0f} MB; budget file {m['file_mb']:.0f} + KV cache "
        f"{m['kv_cache_mb']:.0f} + {memory.WORKING_MEMORY_BUDGET / MB:.0f} = {m['budget_mb']:.0f} MB",
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

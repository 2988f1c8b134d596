"""Timing the kit's chat path: the speeds and costs a person asking a question gets.

Everything goes through Engine.stream as the page and `research chat` use it (chat template,
tokenization, sampling with the page's defaults, detokenization, text pieces), in rows with
llama-bench's field names (research.llamacpp.bench.row), plus the time to first token by part and
the cold start of `research chat` in a fresh process.
"""

from __future__ import annotations

import json
import statistics
import time

from research import child, device, energy
from research.engine import Engine, EngineConfig, Sampling, conversation
from research.errors import KitError
from research.llamacpp import build
from research.llamacpp.bench import row
from research.models.catalog import resolve

#: A question of about 30 tokens with the chat template, for the time to first token.
QUESTION = "In which year did the Berlin Wall fall, and which two countries were reunited as a result?"


#: The request the decode speed is measured on: short, so the answer starts near llama-bench's.
TG_QUESTION = "Tell me a story."


def prompt_of(engine: Engine, n_tokens: int, salt: str) -> list[dict]:
    """A one-question conversation whose whole prompt is `n_tokens` long (or just under).

    `salt` starts the question so that no repetition reuses another's KV cache.
    """
    words = max(1, n_tokens - 40)
    for _ in range(8):
        msgs = conversation(f"{salt} " + "word " * words)
        n = len(engine.prompt_tokens(msgs))
        if n == n_tokens:
            break
        words = max(1, words + n_tokens - n)
    return msgs


def check_pp(engine: Engine, pp: int) -> None:
    """KitError when `pp` prompt tokens are fewer than the chat path's shortest prompt for this
    model (its chat template and a one-word question): a pp test would measure more than it says."""
    smallest = len(engine.prompt_tokens(prompt_of(engine, 1, "r0x0")))
    if pp < smallest:
        raise KitError(
            f"--pp {pp} is shorter than the chat path's shortest prompt for {engine.ref.path.name} "
            f"({smallest} tokens: its chat template and a one-word question); use --pp {smallest} or more"
        )


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
        "step_parts": stats.step_parts,
    }


def model_fields(engine: Engine) -> dict:
    """The model and settings columns of a row, as llama-bench names and writes them."""
    info, backend = engine.info, engine.backend
    params = info.n_params
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    return {
        "cpu_info": device.cpu_info(),
        "model_type": f"{info.architecture} {size} {info.file_type_name or '?'}",
        "model_size": sum(t.n_bytes for t in info.tensors),
        "model_n_params": params,
        "n_batch": backend.n_batch,
        "n_ubatch": backend.n_ubatch,
        "type_k": backend.kv_type,
        "type_v": backend.kv_type,
        "flash_attn": int(backend.flash_attn),
        "load_mode": "mmap" if backend.mapped else "none",
        "huge_pages_mb": backend.huge_pages_mb,  # read in: how much of it went onto huge pages
    }


def kit_rows(
    model=None, threads: int | None = None, pp: int = 512, tg: int = 128, reps: int = 5
) -> list[dict]:
    """pp and tg rows of the kit's chat path at one thread count, in llama-bench's field names.

    Both rows also carry the median time to first token of a ~30-token question (`ttft_ms`) and
    the process's peak resident memory from loading to the last repetition (`peak_rss_mb`).
    """
    ref = resolve(model)
    threads = threads or device.default_threads()
    config = EngineConfig(n_ctx=max(2048, pp + tg + 64), n_threads=threads)
    device.reset_peak_rss()
    engine = Engine.load(ref, config)
    try:
        check_pp(engine, pp)
        kit_once(engine, min(pp, 64), 8, -1)
        runs = [kit_once(engine, pp, tg, rep) for rep in range(reps)]
        ttft = ttft_parts(engine, reps=3)["ttft_s"]
        extra = model_fields(engine) | {"ttft_ms": ttft * 1e3, "peak_rss_mb": device.peak_rss_mb()}
        extra |= cost_fields(runs)
    finally:
        engine.close()
    commit = (build.latest_record() or {}).get("llama_cpp_commit", "unknown")
    return [
        row(
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
        row(
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
    args = ["chat", "--temperature", "0", "--max-tokens", "16", "--ctx", n_ctx, "--json", "-p", QUESTION]
    cmd = child.python_module("research", *args, *(["--model", model] if model else []))
    t = time.perf_counter()
    r = child.run(cmd, "the cold start (research chat)", timeout=600)
    wall = time.perf_counter() - t
    out = json.loads(r.stdout)
    return {"command_to_answer_s": wall, "ttft_s": out["ttft_s"], "peak_rss_mb": out["peak_rss_mb"]}

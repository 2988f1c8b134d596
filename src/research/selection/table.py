"""Model selection report: one row per quantized file, and the paper's model on a phone.

Joins what the other modules measured (research.models.quantize, bench, quality, memory, projection)
into one table, says what each row is (the source's own type, an upcast above it, the quality
reference, a type below it), and builds the same table for Orca-Mini-3B from its published
sizes, projected to a device profile. The figures are in research.paper.figures.
"""

from __future__ import annotations

import time
from pathlib import Path

from research import paths
from research.engine import memory
from research.errors import KitError
from research.models import quantize
from research.models.catalog import catalog, resolve
from research.models.gguf import read_gguf
from research.selection import projection
from research.units import MB

#: Delta perplexity of Llama-3-8B per type (llama.cpp tools/quantize README, PR 6936): a proxy
#: for models we cannot measure here, such as Orca-Mini-3B.
PUBLISHED_DELTA_PPL = {
    "Q8_0": 0.003,
    "Q6_K": 0.022,
    "Q5_1": 0.106,
    "Q5_0": 0.132,
    "Q4_1": 0.451,
    "Q4_0": 0.469,
}

#: OpenLLaMA-3B's shape (Orca-Mini-3B's base), as in data/devices.yaml.
ORCA_SHAPE = {"n_layer": 26, "n_embd": 3200, "n_ff": 8640, "n_head_kv": 32, "head_dim": 100, "vocab": 32000}


def out_dir(path) -> Path:
    """A notebook's output folder: absolute as given, else inside the checkout (runs/ is
    git-ignored), wherever the notebook runs from: "runs/02" -> <checkout>/runs/02."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else paths.REPO_ROOT / p


def progress():
    """A progress callback for long notebook cells: each step printed at once with the seconds
    since the callback was made, so a cell that runs for minutes is never silent."""
    t0 = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {text}", flush=True)

    return say


def role(qtype: str, source_type: str) -> str:
    """What a ladder row is against its source's type: "source", "upcast" (above the source's
    precision: more bytes, no more information) or "below source" (rounded a second time).

    `role("Q8_0", "Q4_1")` -> "upcast"; `role("Q4_0", "Q4_1")` -> "below source".
    """
    if qtype == source_type:
        return "source"
    bpw = {name: t.bpw for name, t in quantize.TYPES.items()}
    return "upcast" if bpw.get(qtype, 16.0) > bpw.get(source_type, 16.0) + 1e-9 else "below source"


def ladder_rows(
    quants,
    bench_rows: list[dict],
    quality_rows: list[dict],
    threads: int,
    n_ctx: int = 2048,
    device: str = "galaxy-s21",
    source=None,
) -> list[dict]:
    """One row per file of the ladder: size, bits/weight, fallbacks, memory, speed, quality, phone.

    Args:
        quants: research.models.quantize.QuantResult list; bench_rows: research.measure.bench.sweep() rows;
        quality_rows: research.measure.quality.compare() rows; threads: which bench rows to use;
        source: the model the ladder was written from (catalog id or path; None: the bundled one).
    Each row carries its `role` (see role()) and the flags research.selection.pareto reads: `reference`
    (the row the KL divergence is measured against) and `upcast` (above the source's precision).
    """
    eff = projection.phone_efficiency()
    source_type, _ = quantize.source_bpw(read_gguf(resolve(source).path))
    ref_paths = {str(Path(r["path"]).resolve()) for r in quality_rows if r.get("reference")}
    rows = []
    for q in quants:
        info = read_gguf(q.path)
        path = str(Path(q.path).resolve())

        def bench(test: str, backend: str = "kit", path: str = path) -> float | None:
            return next(
                (
                    b["avg_ts"]
                    for b in bench_rows
                    if str(Path(b["model_filename"]).resolve()) == path
                    and b["backend"] == backend
                    and b["n_threads"] == threads
                    and b["test"].startswith(test)
                ),
                None,
            )

        qual = next((r for r in quality_rows if str(Path(r["path"]).resolve()) == path), {})
        phone = projection.project(projection.shape_of(info), device, eff)
        kind = "reference" if path in ref_paths else role(q.type, source_type)
        rows.append(
            {
                "type": q.type,
                "role": kind,
                "reference": kind == "reference",
                "upcast": kind in ("upcast", "reference") and q.type != source_type,
                "n_tensors": q.n_tensors,
                "path": path,
                "size_mb": q.size_bytes / MB,
                "bits_per_weight": q.bits_per_weight,
                "n_fallback": q.n_fallback,
                "memory_mb": memory.estimate(info, n_ctx).total / MB,
                "pp_tps": bench("pp"),
                "tg_tps": bench("tg"),
                "llama_bench_tg_tps": bench("tg", "llama-bench"),
                "ppl": qual.get("ppl"),
                "delta_ppl": qual.get("delta_ppl"),
                "kld_mean": qual.get("kld_mean"),
                "same_top_pct": qual.get("same_top_pct"),
                "phone_tps": phone["projected_tps"],
                "phone_memory_mb": memory.estimate(info, n_ctx, cpu="arm-dotprod").total / MB,
            }
        )
    return rows


def orca_rows(device: str = "galaxy-s21", n_ctx: int = 2048) -> list[dict]:
    """Orca-Mini-3B (the paper's model) from the catalog's published sizes, projected to `device`."""
    eff = projection.phone_efficiency()
    rows = []
    for e in catalog().values():
        if e.family != "orca-mini":
            continue
        size = e.size or int(e.approx_size_mb * MB)
        published = {
            "model": "Orca-Mini-3B",
            "quant": e.quant,
            "file_bytes": size,
            "n_params": e.params_b * 1e9,
        }
        shape = projection.shape_of_published(published | ORCA_SHAPE | {"tied_embeddings": False})
        est = memory.estimate_shape(size, e.quant, **ORCA_SHAPE, tied=False, n_ctx=n_ctx)
        rows.append(
            {
                "type": e.quant,
                "size_mb": size / MB,
                "bits_per_weight": size * 8 / (e.params_b * 1e9),
                "phone_memory_mb": est.total / MB,  # the peak: loading or answering
                "phone_memory_answering_mb": est.answering / MB,
                "phone_load": est.load,  # read in where ARM repacks it
                "phone_tps": projection.project(shape, device, eff)["projected_tps"],
                "published_delta_ppl_llama3_8b": PUBLISHED_DELTA_PPL.get(e.quant),
                "exact_size": e.size is not None,
            }
        )
    return sorted(rows, key=lambda r: r["size_mb"])


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """Rows as a Markdown table: `columns` maps a row key to "Header:format"."""
    head = [spec.split(":")[0] for spec in columns.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for key, spec in columns.items():
            fmt = spec.split(":", 1)[1] if ":" in spec else ""
            v = r.get(key)
            cells.append("–" if v is None else format(v, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scored_logprobs(model, text: str, n_ctx: int = 512, n_chunks: int | None = 1, threads: int | None = None):
    """Per chunk, the log-probabilities at the positions research.measure.quality scores (the second
    half of each `n_ctx`-token chunk, from an empty cache, BOS first) and the token after each, read
    through llama-cpp-python's public API rather than the kit's engine: a `Llama` loaded with
    `logits_all=True`, whose `eval()` then keeps every position's logits in `scores`. Notebook 02
    computes KL divergence by hand from these and checks it against quality.compare().

    Without logits_all (the engine never sets it), `eval()` fills no row of `scores`: read there,
    every distribution is uniform (KL 0, top tokens 0, 1, 2). `n_chunks` None: every whole chunk
    of the text, as quality.compare(). Yields (log-probs of shape (n_ctx/2 - 1, n_vocab), next tokens).
    """
    import llama_cpp
    import numpy as np

    from research import device
    from research.measure.quality import log_softmax

    threads = threads or device.default_threads()
    # flash_attn as the engine (EngineConfig): without it llama.cpp sums attention in another
    # order, and the KL divergence of Q4_0 moved by 1 % on notebook 02's chunks.
    llm = llama_cpp.Llama(
        str(resolve(model).path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=True,
        logits_all=True,
        verbose=False,
    )
    try:
        tokens, first = llm.tokenize(text.encode(), add_bos=True, special=False), n_ctx // 2
        whole = len(tokens) // n_ctx
        if whole == 0 or (n_chunks or 0) > whole:
            raise KitError(
                f"the text holds {len(tokens)} tokens, fewer than {n_chunks or 1} chunks of {n_ctx}"
            )
        add_bos = tokens[0] == llm.token_bos()
        for c in range(n_chunks or whole):
            chunk = tokens[c * n_ctx : (c + 1) * n_ctx]
            if add_bos:  # as llama-perplexity: every chunk starts with BOS
                chunk[0] = llm.token_bos()
            llm.reset()  # eval() then clears the KV cache from position 0
            llm.eval(chunk)
            yield (
                log_softmax(np.array(llm.scores[first : n_ctx - 1], dtype=np.float32)),
                np.array(chunk[first + 1 :]),
            )
    finally:
        llm.close()

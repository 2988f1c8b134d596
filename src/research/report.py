"""Model selection report: one row per quantized file, the figures, and the paper's model on a phone.

Joins what the other modules measured (research.quantize, bench, quality, memory, projection)
into one table, draws the four figures of notebook 02 to files, and builds the same table for
Orca-Mini-3B from its published sizes, projected to a device profile.
"""

from __future__ import annotations

from pathlib import Path

from research import memory, projection
from research.gguf_info import read_gguf
from research.models import catalog
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


def ladder_rows(
    quants,
    bench_rows: list[dict],
    quality_rows: list[dict],
    threads: int,
    n_ctx: int = 2048,
    device: str = "galaxy-s21",
) -> list[dict]:
    """One row per file of the ladder: size, bits/weight, fallbacks, memory, speed, quality, phone.

    Args:
        quants: research.quantize.QuantResult list; bench_rows: research.bench.sweep() rows;
        quality_rows: research.quality.compare() rows; threads: which bench rows to use.
    """
    eff = projection.phone_efficiency()
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
        rows.append(
            {
                "type": q.type,
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


def figures(
    rows: list[dict], out_dir, machine: dict | None = None, front: list[dict] = ()
) -> dict[str, Path]:
    """Draw the selection figures to PNG files in `out_dir`; returns {name: path}.

    `machine`: this machine's {"bandwidth_gbs", "rows"} for the roofline figure;
    `front`: the Pareto-optimal rows, marked in the Pareto figure.
    """
    import matplotlib

    matplotlib.use("Agg")  # files first; the notebook shows the PNGs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "size_vs_speed": size_vs_speed(rows),
        "bpw_vs_quality": bits_vs_quality(rows),
        "pareto": pareto_front(rows, front),
        "roofline": roofline(machine),
    }
    return {name: _save(fig, out / f"{name}.png") for name, fig in drawn.items()}


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label(ax, xs, ys, names) -> None:
    for x, y, n in zip(xs, ys, names, strict=True):
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _kld(r: dict) -> float:
    return max(r["kld_mean"], 1e-6)  # the reference's 0 on a log axis


def size_vs_speed(rows: list[dict]):
    """File size against decode speed, the kit's chat path and llama-bench."""
    import matplotlib.pyplot as plt

    fast = [r for r in rows if r.get("tg_tps")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["size_mb"] for r in fast], [r["tg_tps"] for r in fast], label="kit chat path")
    lb = [r for r in fast if r.get("llama_bench_tg_tps")]
    if lb:
        ax.scatter(
            [r["size_mb"] for r in lb], [r["llama_bench_tg_tps"] for r in lb], marker="x", label="llama-bench"
        )
    _label(ax, [r["size_mb"] for r in fast], [r["tg_tps"] for r in fast], [r["type"] for r in fast])
    ax.set(xlabel="file size (MB)", ylabel="decode tokens/s", title="Size against decode speed")
    ax.legend()
    return fig


def bits_vs_quality(rows: list[dict]):
    """True bits per weight against perplexity and against KL divergence from the reference."""
    import matplotlib.pyplot as plt

    qual = [r for r in rows if r.get("ppl") is not None]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["bits_per_weight"] for r in qual]
    a1.scatter(xs, [r["ppl"] for r in qual])
    _label(a1, xs, [r["ppl"] for r in qual], [r["type"] for r in qual])
    a1.set(xlabel="bits per weight (true, from tensor types)", ylabel="perplexity", title="Perplexity")
    a2.scatter(xs, [_kld(r) for r in qual])
    names = [r["type"] + (" (reference: 0)" if r["kld_mean"] <= 0 else "") for r in qual]
    _label(a2, xs, [_kld(r) for r in qual], names)
    a2.set(
        xlabel="bits per weight", ylabel="mean KL divergence (log scale)", yscale="log", title="KL divergence"
    )
    return fig


def pareto_front(rows: list[dict], front: list[dict] = ()):
    """Predicted peak memory against KL divergence, coloured by decode speed, the front ringed."""
    import matplotlib.pyplot as plt

    full = [r for r in rows if r.get("ppl") is not None and r.get("tg_tps")]
    fig, ax = plt.subplots(figsize=(6, 4))
    sc = ax.scatter([r["memory_mb"] for r in full], [_kld(r) for r in full], c=[r["tg_tps"] for r in full])
    fig.colorbar(sc, label="decode tokens/s")
    on = [r for r in full if r in front]
    ax.scatter(
        [r["memory_mb"] for r in on],
        [_kld(r) for r in on],
        s=160,
        facecolors="none",
        edgecolors="red",
        label="Pareto front",
    )
    _label(ax, [r["memory_mb"] for r in full], [_kld(r) for r in full], [r["type"] for r in full])
    ax.set(
        xlabel="predicted peak memory (MB)", ylabel="mean KL divergence", yscale="log", title="Pareto front"
    )
    ax.legend()
    return fig


def roofline(machine: dict | None = None):
    """Decode speed against bytes read per token: published phones, the S21's roofline and the
    projection from it, and this machine's roofline and measurements when given."""
    import matplotlib.pyplot as plt

    def tps(gbs: float, mb: float) -> float:
        return gbs * 1e9 / (mb * MB)  # bandwidth in decimal GB/s, bytes per token in MB

    fig, ax = plt.subplots(figsize=(6, 4))
    published = projection.published_check()
    xs = [p["bytes_per_token_mb"] for p in published]
    ax.scatter(xs, [p["measured_tps"] for p in published], marker="^", label="phones (published)")
    grid = [10 * 1.2**i for i in range(40)]
    s21 = projection.device("galaxy-s21")["bandwidth_gbs"]
    ax.plot(grid, [tps(s21, g) for g in grid], "--", label=f"S21 roofline ({s21:g} GB/s)")
    eff = projection.phone_efficiency()
    ax.plot(grid, [eff * tps(s21, g) for g in grid], ":", label=f"S21 projection ({eff:.0%} of roofline)")
    if machine:
        bw = machine["bandwidth_gbs"]
        measured = f"this machine's roofline ({bw:.1f} GB/s measured)"
        ax.plot(grid, [tps(bw, g) for g in grid], "-", label=measured)
        ax.scatter(
            [r["bytes_per_token_mb"] for r in machine["rows"]],
            [r["measured_tps"] for r in machine["rows"]],
            label="this machine (measured)",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="bytes read per token (MB)",
        ylabel="decode tokens/s",
        title="Decode speed against the bandwidth roofline",
    )
    ax.legend(fontsize=7)
    return fig

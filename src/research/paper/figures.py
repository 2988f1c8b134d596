"""The notebooks' figures, one function per figure, each returning a matplotlib Figure.

Figures are built without pyplot (no global state; nothing to close), shown beside the text
that explains them with show(), which also writes them as PNG files when given a folder, so
the rendered results (research.paper.render) and the notebook show the same picture.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from research.selection import projection
from research.units import MB

#: Tensor types in a fixed colour each, so the same type looks the same in every figure.
TYPE_COLOURS = {
    "F32": "#999999",
    "F16": "#4c72b0",
    "Q8_0": "#55a868",
    "Q6_K": "#8172b2",
    "Q5_1": "#937860",
    "Q5_0": "#c44e52",
    "Q5_K": "#da8bc3",
    "Q4_1": "#ccb974",
    "Q4_0": "#64b5cd",
    "Q4_K": "#8c8c8c",
    "Q3_K": "#e17c05",
    "Q2_K": "#000000",
}


def show(fig: Figure, folder=None, name: str | None = None) -> Path | None:
    """Display `fig` as a PNG in the notebook; with `folder` and `name` also write folder/name.png."""
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    display(Image(data=buf.getvalue()))
    if folder is None or name is None:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _label(ax, xs, ys, names) -> None:
    for x, y, n in zip(xs, ys, names, strict=True):
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _eligible(r: dict) -> bool:
    return not r.get("reference") and not r.get("upcast")


def speed_by_threads(rows: list[dict]) -> Figure:
    """Prompt (pp) and decode (tg) tokens/s by thread count, one bar group per backend and test."""
    fig = Figure(figsize=(6, 3.2))
    axes = fig.subplots(1, 2)
    for ax, test in zip(axes, ("pp", "tg"), strict=True):
        sel = [r for r in rows if r["test"].startswith(test)]
        labels = [f"{r['backend']}\n{r['n_threads']} thr" for r in sel]
        ax.bar(labels, [r["avg_ts"] for r in sel], yerr=[r["stddev_ts"] for r in sel], color="#4c72b0")
        ax.set(title=f"{'prompt' if test == 'pp' else 'decode'} ({sel[0]['test'] if sel else test})")
        ax.set_ylabel("tokens/s")
        ax.tick_params(axis="x", labelsize=8)
    return fig


def tensor_mix(quants) -> Figure:
    """What each file of a ladder is made of: the share of its weights in each tensor type.

    A k-quant whose bar is mostly a legacy colour fell back (rows not a multiple of 256 wide).
    """
    fig = Figure(figsize=(7, 0.45 * len(quants) + 1.2))
    ax = fig.subplots()
    seen = set()
    for i, q in enumerate(quants):
        total, left = sum(q.type_mix.values()) or 1, 0.0
        for t, n in sorted(q.type_mix.items()):
            share = n / total
            label = None if t in seen else t
            seen.add(t)
            ax.barh(i, share, left=left, color=TYPE_COLOURS.get(t, "#cccccc"), label=label)
            left += share
    names = [f"{q.type} ({q.n_fallback} fallbacks)" if q.n_fallback else q.type for q in quants]
    ax.set_yticks(range(len(quants)), names, fontsize=8)
    ax.set(xlabel="share of the weights", title="Tensor types inside each file", xlim=(0, 1))
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return fig


def size_vs_speed(rows: list[dict]) -> Figure:
    """File size against decode speed, the kit's chat path and llama-bench."""
    fast = [r for r in rows if r.get("tg_tps")]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.scatter([r["size_mb"] for r in fast], [r["tg_tps"] for r in fast], label="kit chat path")
    lb = [r for r in fast if r.get("llama_bench_tg_tps")]
    if lb:
        xs, ys = [r["size_mb"] for r in lb], [r["llama_bench_tg_tps"] for r in lb]
        ax.scatter(xs, ys, marker="x", label="llama-bench")
    _label(ax, [r["size_mb"] for r in fast], [r["tg_tps"] for r in fast], [r["type"] for r in fast])
    ax.set(xlabel="file size (MB)", ylabel="decode tokens/s", title="Size against decode speed")
    ax.legend()
    return fig


def bits_vs_quality(rows: list[dict], reference_label: str) -> Figure:
    """True bits per weight against perplexity and against KL divergence from the reference.

    Hollow markers: rows no choice may pick (the reference, upcasts). `reference_label` says what
    the KL divergence is measured against, e.g. "the F16 upcast of the Q4_1 source".
    """
    qual = [r for r in rows if r.get("ppl") is not None]
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    for ax, key in ((a1, "ppl"), (a2, "kld_mean")):
        for ok in (True, False):
            sel = [r for r in qual if _eligible(r) == ok]
            ys = [max(r[key], 1e-6) for r in sel]  # the reference's 0 on a log axis
            kw = {} if ok else {"facecolors": "none", "edgecolors": "grey"}
            ax.scatter(
                [r["bits_per_weight"] for r in sel], ys, label="eligible" if ok else "reference/upcast", **kw
            )
            _label(ax, [r["bits_per_weight"] for r in sel], ys, [r["type"] for r in sel])
    a1.set(xlabel="bits per weight (true, from tensor types)", ylabel="perplexity", title="Perplexity")
    a2.set(
        xlabel="bits per weight",
        ylabel=f"mean KL divergence vs {reference_label}",
        yscale="log",
        title="KL divergence (reference drawn at 1e-6: it is 0)",
    )
    a2.yaxis.label.set_size(8)
    a1.legend(fontsize=7)
    return fig


def memory_parts(rows: list[dict], budget_mb: float) -> Figure:
    """Predicted peak memory by part (weights, KV cache, compute, runtime), the measured peak
    beside it, and the memory budget: research.measure.memory.compare() rows."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    parts = (("weights_mb", "weights"), ("repacked_mb", "repacked copy"), ("kv_cache_mb", "KV cache"))
    parts += (("compute_mb", "compute"), ("runtime_mb", "runtime"), ("staging_mb", "staging (loading)"))
    names = [r["model"].removesuffix(".gguf").rsplit(".", 1)[-1] for r in rows]
    bottom = [0.0] * len(rows)
    for key, label in parts:
        values = [r.get(key, 0.0) for r in rows]
        if any(values):
            ax.bar(names, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.scatter(
        names, [r["measured_mb"] for r in rows], marker="D", color="black", zorder=3, label="measured peak"
    )
    ax.axhline(budget_mb, color="red", ls="--", label=f"budget {budget_mb:.0f} MB")
    ax.set(ylabel="MB", title=f"Peak memory at a {rows[0]['n_ctx']}-token context: predicted parts, measured")
    ax.legend(fontsize=7, ncol=2)
    ax.tick_params(axis="x", labelsize=8)
    return fig


def roofline(machine: dict | None = None) -> Figure:
    """Decode speed against bytes read per token: published phones, the S21's roofline and the
    projection from it, and this machine's roofline and measurements when given."""

    def tps(gbs: float, mb: float) -> float:
        return gbs * 1e9 / (mb * MB)  # bandwidth in decimal GB/s, bytes per token in MB

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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
        ax.plot(
            grid, [tps(bw, g) for g in grid], "-", label=f"this machine's roofline ({bw:.1f} GB/s measured)"
        )
        rows = machine["rows"]
        ax.scatter(
            [r["bytes_per_token_mb"] for r in rows], [r["measured_tps"] for r in rows], label="this machine"
        )
    ax.set(xscale="log", yscale="log", xlabel="bytes read per token (MB)", ylabel="decode tokens/s")
    ax.set(title="Decode speed against the bandwidth roofline")
    ax.legend(fontsize=7)
    return fig


def phone_check(rows: list[dict], error: float) -> Figure:
    """Each published phone figure: measured, and projected from the others with the median error."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    names = [f"{r['device']}\n{r['model'][:22]}" for r in rows]
    xs = range(len(rows))
    ax.scatter(
        xs,
        [r["measured_tps"] for r in rows],
        marker="D",
        color="black",
        label="measured (published)",
        zorder=3,
    )
    lo_hi = [projection.band(r["projected_tps"], error) for r in rows]
    ax.errorbar(
        xs,
        [r["projected_tps"] for r in rows],
        yerr=[
            [p - lo for p, (lo, _) in zip((r["projected_tps"] for r in rows), lo_hi, strict=True)],
            [hi - p for p, (_, hi) in zip((r["projected_tps"] for r in rows), lo_hi, strict=True)],
        ],
        fmt="o",
        capsize=3,
        label=f"projected from the others, ± median error {error:.0%}",
    )
    ax.set_xticks(list(xs), names, fontsize=6, rotation=60, ha="right")
    ax.set(ylabel="decode tokens/s", title="Leave-one-out: each phone predicted from the others")
    ax.legend(fontsize=7)
    return fig


def pareto_front(
    rows: list[dict], front: list[dict] = (), quality_label: str = "mean KL divergence"
) -> Figure:
    """Predicted peak memory against quality, coloured by decode speed, the front ringed; rows no
    choice may pick (reference, upcasts) drawn as grey crosses."""
    full = [r for r in rows if r.get("kld_mean") is not None and r.get("tg_tps")]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ok = [r for r in full if _eligible(r)]
    sc = ax.scatter(
        [r["memory_mb"] for r in ok], [max(r["kld_mean"], 1e-6) for r in ok], c=[r["tg_tps"] for r in ok]
    )
    fig.colorbar(sc, ax=ax, label="decode tokens/s")
    out = [r for r in full if not _eligible(r)]
    ax.scatter(
        [r["memory_mb"] for r in out],
        [max(r["kld_mean"], 1e-6) for r in out],
        marker="x",
        color="grey",
        label="not eligible (reference, upcast)",
    )
    on = [r for r in ok if r in front]
    ax.scatter(
        [r["memory_mb"] for r in on],
        [r["kld_mean"] for r in on],
        s=160,
        facecolors="none",
        edgecolors="red",
        label="Pareto front (eligible rows)",
    )
    _label(
        ax,
        [r["memory_mb"] for r in full],
        [max(r["kld_mean"], 1e-6) for r in full],
        [r["type"] for r in full],
    )
    ax.set(xlabel="predicted peak memory (MB)", ylabel=quality_label, yscale="log", title="Pareto front")
    ax.yaxis.label.set_size(8)
    ax.legend(fontsize=7)
    return fig


def orca_memory(
    predicted: dict[int, list[dict]],
    measured: list[dict],
    budget_mb: float,
    paper_mb: tuple[float, float],
    measured_label: str = "measured",
) -> Figure:
    """Orca-Mini-3B's peak memory by type: predicted for the phone at each context, measured on
    files of its shape (`measured_label` says where and when), against the budget and the paper's
    figure read as a band (lo, hi) MB, as the paper's RAM verdict reads it
    (research.paper.claims.PAPER_RAM_MB). `predicted`: {n_ctx: orca_rows}."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    types = [r["type"] for r in next(iter(predicted.values()))]
    width = 0.8 / max(1, len(predicted))
    for k, (n_ctx, rows) in enumerate(sorted(predicted.items())):
        xs = [i + (k - (len(predicted) - 1) / 2) * width for i in range(len(types))]
        ax.bar(
            xs, [r["phone_memory_mb"] for r in rows], width, label=f"predicted, phone, {n_ctx} ctx", alpha=0.7
        )
        got = {m["type"]: m for m in measured if m.get("n_ctx") == n_ctx}
        pts = [(x, got[t]["measured_mb"]) for x, t in zip(xs, types, strict=True) if t in got]
        if pts:
            ax.scatter(
                *zip(*pts, strict=True),
                marker="D",
                color="black",
                zorder=3,
                label=f"{measured_label} (random weights, same shape)" if k == 0 else None,
            )
    ax.axhline(budget_mb, color="red", ls="--", label=f"budget {budget_mb:.0f} MB")
    lo, hi = paper_mb
    label = f"the paper's ~2.2 GB, read as 2.1-2.3 GB or GiB: {lo:.0f}-{hi:.0f} MB"
    ax.axhspan(lo, hi, color="purple", alpha=0.15, label=label)
    ax.set_xticks(range(len(types)), types)
    ax.set(ylabel="peak MB", title="Orca-Mini-3B: peak memory by type and context")
    ax.legend(fontsize=7)
    return fig


def orca_speed(
    rows: list[dict],
    error: dict,
    threshold: float,
    measured: dict[str, float] | None = None,
    measured_label: str = "measured",
) -> Figure:
    """Projected S21 decode speed of Orca-Mini-3B by type with the projection's median and largest
    error as bars, the kit's reading-speed threshold, and (when given) speeds measured on files of
    its shape on a PC (`measured_label` says where and when)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    xs = list(range(len(rows)))
    p = [r["phone_tps"] for r in rows]
    for e, style, label in (
        (error["max"], dict(color="#bbbbbb", lw=6), "largest error"),
        (error["median"], dict(color="#4c72b0", lw=2), "median error"),
    ):
        bands = [projection.band(v, e) for v in p]
        ax.vlines(
            xs,
            [b[0] for b in bands],
            [min(b[1], 3 * v) for b, v in zip(bands, p, strict=True)],
            label=f"band at the {label} ({e:.0%})",
            **style,
        )
    ax.scatter(xs, p, color="black", zorder=3, label="projected, Galaxy S21")
    if measured:
        pts = [(x, measured[r["type"]]) for x, r in zip(xs, rows, strict=True) if r["type"] in measured]
        if pts:
            ax.scatter(
                *zip(*pts, strict=True),
                marker="s",
                color="green",
                zorder=3,
                label=f"{measured_label} (a PC, not a phone)",
            )
    ax.axhline(
        threshold, color="red", ls="--", label=f"reading speed {threshold:g} t/s (the kit's threshold)"
    )
    ax.set_xticks(xs, [f"{r['type']}\n{r['bits_per_weight']:.2f} b/w" for r in rows], fontsize=8)
    ax.set(ylabel="decode tokens/s", title="Orca-Mini-3B decode speed: projection and its error")
    ax.legend(fontsize=7)
    return fig


def topic_intervals(summaries: dict[str, dict], key: str = "contains") -> Figure:
    """Per-topic share of answers (`key`) with 95 % Wilson intervals, one colour per run label:
    {label: research.evaluation.run.summarize() result}."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    topics = sorted({t for s in summaries.values() for t in s["per_topic"]})
    for k, (label, s) in enumerate(summaries.items()):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(topics):
            b = s["per_topic"].get(t)
            if b and b["n"]:
                xs.append(i + 0.15 * (k - (len(summaries) - 1) / 2))
                ys.append(b[key])
                lo.append(b[key] - b[key + "_ci"][0])
                hi.append(b[key + "_ci"][1] - b[key])
        ax.errorbar(
            xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=f"{label} (overall {s[key]:.0%}, n={s['n']})"
        )
    ax.set_xticks(range(len(topics)), topics, rotation=30, fontsize=8)
    ax.set(ylabel=f"share '{key}'", ylim=(-0.02, 1.02), title="Per topic, with 95 % Wilson intervals")
    ax.legend(fontsize=7)
    return fig


def ab_outcomes(stats: dict, names: tuple[str, str]) -> Figure:
    """Two runs on the same questions (research.evaluation.pairs.compare): identical answers, and where
    one is right and the other not."""
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    labels = ["identical text", "both right", f"only {names[0]}", f"only {names[1]}", "both wrong"]
    keys = ["identical", "both_right", "only_a", "only_b", "both_wrong"]
    ax.bar(labels, [stats[k] for k in keys], color=["#999999", "#55a868", "#4c72b0", "#c44e52", "#333333"])
    ax.set(ylabel=f"questions (of {stats['n']})", title="Two quantizations on the same questions")
    ax.tick_params(axis="x", labelsize=8)
    return fig

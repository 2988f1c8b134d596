"""Choosing a quantization: the Pareto front of size, speed and quality, and a recommendation.

The paper chose Orca-Mini-3B at about 5.6 bits per weight "after some experiments"; here the
choice is a rule over measured rows: fit the memory budget, decode at least at reading speed,
and among those lose the least quality against the reference (lowest KL divergence).

Two kinds of row can never be chosen, whatever their figures: the reference itself (its KL
divergence is 0 by definition, not by merit) and upcasts, files written at a higher precision
than their source (an F16 or Q8_0 file made from Q4_1 weights holds no more information than
the Q4_1 file, only more bytes). Rows say so with `reference: True` or `upcast: True`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Silent reading speed, ~238 words/min (Brysbaert 2019) at ~1.33 tokens per word: below it
#: the reader waits for the model.
READING_TPS = 5.3

#: (key, better) of the three axes a row is judged on.
AXES = (("memory_mb", "low"), ("tg_tps", "high"), ("kld_mean", "low"))


def dominates(a: dict, b: dict, axes=AXES) -> bool:
    """True when `a` is at least as good as `b` on every axis and better on one."""
    sign = {"low": 1, "high": -1}
    pairs = [(sign[d] * a[k], sign[d] * b[k]) for k, d in axes]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto(rows: list[dict], axes=AXES) -> list[dict]:
    """The rows no other row dominates, in their given order.

    `pareto([{"m": 1, "q": 2}, {"m": 2, "q": 1}, {"m": 2, "q": 2}], (("m", "low"), ("q", "low")))`
    -> the first two.
    """
    return [r for r in rows if not any(dominates(o, r, axes) for o in rows if o is not r)]


def eligible(rows: list[dict]) -> list[dict]:
    """The rows a choice may pick: neither the quality reference nor an upcast of the source."""
    return [r for r in rows if not r.get("reference") and not r.get("upcast")]


@dataclass(frozen=True)
class Choice:
    row: dict | None
    reason: str


def recommend(
    rows: list[dict],
    budget_mb: float,
    min_tps: float = READING_TPS,
    quality: str = "kld_mean",
    speed: str = "tg_tps",
    quality_label: str = "KL divergence",
) -> Choice:
    """The best quality among eligible rows within `budget_mb` and at least `min_tps`; ties: smaller.

    Reference and upcast rows are left out first (see eligible). `quality_label` names the quality
    column in the reason, honestly: "KL divergence vs the F16 upcast", "ΔPPL (Llama-3-8B proxy)".
    Returns a Choice whose reason states the numbers, or why nothing qualifies and by how much.
    """
    pool = eligible(rows)
    left_out = len(rows) - len(pool)
    note = f" ({left_out} reference or upcast rows not eligible)" if left_out else ""
    if not pool:
        return Choice(None, f"no eligible row: all {len(rows)} are the reference or upcasts")
    fits = [r for r in pool if r["memory_mb"] <= budget_mb]
    fast = [r for r in fits if r[speed] >= min_tps]
    if not fast:
        if not fits:
            smallest = min(pool, key=lambda r: r["memory_mb"])
            over = smallest["memory_mb"] - budget_mb
            why = (
                f"none fits {budget_mb:.0f} MB; the smallest, {smallest['type']}, "
                f"needs {smallest['memory_mb']:.0f} MB ({over:.0f} MB, {over / budget_mb:.0%}, over)"
            )
        else:
            best = max(fits, key=lambda r: r[speed])
            why = (
                f"none that fits {budget_mb:.0f} MB reaches {min_tps:g} tokens/s; the fastest, "
                f"{best['type']}, decodes {best[speed]:.1f}"
            )
        return Choice(None, why + note)
    best = min(fast, key=lambda r: (r[quality], r["memory_mb"]))
    return Choice(
        best,
        f"{best['type']}: {best['memory_mb']:.0f} MB of {budget_mb:.0f} MB, {best[speed]:.1f} tokens/s "
        f"(>= {min_tps:g}), {quality_label} {best[quality]:.4f}, the lowest of the {len(fast)} of "
        f"{len(pool)} eligible files that fit and are fast enough{note}",
    )


def sensitivity(
    rows: list[dict],
    budget_mb: float,
    error: float,
    min_tps: float = READING_TPS,
    speed: str = "tg_tps",
    **kw,
) -> dict[str, Choice]:
    """The choice when projected speeds are off by `error` either way (a projection's median error).

    A projection that misses by `error` (projected / measured - 1) means a true speed of
    projected / (1 + error) at worst and projected / (1 - error) at best. Returns
    {"slower": Choice, "as projected": Choice, "faster": Choice}.
    """
    out = {}
    for name, factor in (("slower", 1 / (1 + error)), ("as projected", 1.0), ("faster", 1 / (1 - error))):
        scaled = [dict(r, **{speed: r[speed] * factor}) for r in rows]
        out[name] = recommend(scaled, budget_mb, min_tps, speed=speed, **kw)
    return out

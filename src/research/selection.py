"""Choosing a quantization: the Pareto front of size, speed and quality, and a recommendation.

The paper chose Orca-Mini-3B at about 5.6 bits per weight "after some experiments"; here the
choice is a rule over measured rows: fit the memory budget, decode at least at reading speed,
and among those lose the least quality against the reference (lowest KL divergence).
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
) -> Choice:
    """The best quality among rows within `budget_mb` and at least `min_tps`; ties: smaller.

    Returns a Choice whose reason states the numbers (or why nothing qualifies).
    """
    fits = [r for r in rows if r["memory_mb"] <= budget_mb]
    fast = [r for r in fits if r[speed] >= min_tps]
    if not fast:
        if not fits:
            smallest = min(rows, key=lambda r: r["memory_mb"])
            why = (
                f"none fits {budget_mb:.0f} MB; the smallest, {smallest['type']}, "
                f"needs {smallest['memory_mb']:.0f} MB"
            )
        else:
            best = max(fits, key=lambda r: r[speed])
            why = (
                f"none that fits {budget_mb:.0f} MB reaches {min_tps:g} tokens/s; the fastest, "
                f"{best['type']}, decodes {best[speed]:.1f}"
            )
        return Choice(None, why)
    best = min(fast, key=lambda r: (r[quality], r["memory_mb"]))
    return Choice(
        best,
        f"{best['type']}: {best['memory_mb']:.0f} MB of {budget_mb:.0f} MB, {best[speed]:.1f} tokens/s "
        f"(>= {min_tps:g}), KL divergence {best[quality]:.4f}, the lowest of the {len(fast)} of "
        f"{len(rows)} files that fit and are fast enough",
    )

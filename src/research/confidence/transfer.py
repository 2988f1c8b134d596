"""Confidence that holds on questions unlike those it was fitted on.

A calibration fitted where the bundled model is right 44 % of the time says too much where it is
right 6 % of the time: it sorts answers there, but its numbers run high. Three remedies, each
saved in the calibration and judged on a question set it was not fitted on:

- fit on question sets of different difficulty at once (fit_sets), and keep each set's held-out
  figures, so that the calibration says on what it was fitted and how it did on each part;
- the words: "probably right" and "likely right" start where answers so worded were right at
  least half (three quarters) of the time in every one of those sets, on held-out predictions
  (word_bounds), not at 50 % and 75 % of a number that may run high;
- support: how far a question's own signals (research.engine.signals.QUESTION) lie from those
  of the questions the calibration saw (distance): beyond the farthest 1 % of its own, the
  question is unlike them, and the page says so in words instead of a number (unlike).
"""

from __future__ import annotations

import math

import numpy as np

from research.confidence import methods
from research.confidence.calibration import (
    CHAT,
    Calibration,
    damaged,
    fit,
    fitted_style,
    load,
    measures,
    out_of_fold,
)
from research.engine.signals import QUESTION

#: Answers at or above a bound that all the sets together must hold for it to be set: no bound
#: is set beyond what was seen.
MIN_WORDED = 5
#: The bounds tried for the words, from 50 % up in steps of 2.5 points.
GRID = tuple(round(0.5 + 0.025 * i, 3) for i in range(21))
#: The words whose bounds a calibration sets, and the share right they promise in every set.
PROMISES = (("probably right", 0.5), ("likely right", 0.75))
#: The share of the calibration's own questions counted as unlike: the farthest 1 %.
SUPPORT_QUANTILE = 0.99


def word_bounds(p, y, sets) -> dict[str, float | None]:
    """The probability from which each of PROMISES' words may be said: the lowest bound (at least
    its promise) such that in every set, answers at or above it were right at least as often as
    promised, however few they are (a hard set has few answers up there, and those it has are
    all the evidence of what the words mean on it), where at least MIN_WORDED answers lie at or
    above it in all: no bound beyond what was seen. A set with no answer at or above a bound says
    nothing of it. None: never said.

    `p` are held-out probabilities, `y` right (1) or wrong (0), `sets` each answer's set name."""
    p, y, sets = np.asarray(p, float), np.asarray(y, float), np.asarray(sets, object)
    out: dict[str, float | None] = {}
    floor = 0.0
    for words, promise in PROMISES:
        bound = next(
            (
                b
                for b in GRID
                if b >= max(promise, floor)
                and (p >= b).sum() >= MIN_WORDED
                and all(_kept(p, y, sets == s, b, promise) for s in set(sets))
            ),
            None,
        )
        out[words] = bound
        floor = bound if bound is not None else math.inf
    return out


def _kept(p, y, in_set, bound: float, promise: float) -> bool:
    at = in_set & (p >= bound)
    return bool(not at.any() or y[at].mean() >= promise)


def support_of(X) -> dict | None:
    """What distance() compares a question with: the mean and spread of the question-side signals
    `X` (one row per question, columns QUESTION) and the distance within which SUPPORT_QUANTILE of
    them lie. None without at least 20 questions."""
    X = np.asarray(X, float)
    if X.ndim != 2 or len(X) < 20 or X.shape[1] != len(QUESTION):
        return None
    mean, scale = X.mean(0), X.std(0)
    scale[scale == 0] = 1.0
    d = (((X - mean) / scale) ** 2).mean(1)
    return {
        "names": list(QUESTION),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "limit": float(np.quantile(d, SUPPORT_QUANTILE)),
        "quantile": SUPPORT_QUANTILE,
        "n": len(X),
    }


def distance(support: dict, signals: dict) -> float | None:
    """The mean squared standardized gap between a question's signals and the calibration's
    questions' (0 at their mean, 1 a standard deviation away on every signal); None when the
    answer carries no question-side signals."""
    values = [signals.get(k) for k in support["names"]]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    z = (np.asarray(values, float) - np.asarray(support["mean"])) / np.asarray(support["scale"])
    return float((z**2).mean())


def unlike(cal: Calibration | None, signals: dict | None) -> bool:
    """Whether the question of an answer with these signals is unlike every question `cal` was
    fitted on: farther than SUPPORT_QUANTILE of them from their centre. False without a support
    saved or question-side signals to judge by."""
    support = getattr(cal, "support", None)
    if not support or not signals:
        return False
    d = distance(support, signals)
    return d is not None and d > support["limit"]


def fit_sets(
    method: str, names: tuple[str, ...], records: list[dict], X, y, model_sha256: str, fitted_on: dict
) -> Calibration:
    """A calibration of `method` fitted on answers from one or more question sets at once (each
    record's "set", "all" without one), with each set's held-out figures ("held_out"["by_set"]),
    the bounds of its words (word_bounds) and its support (support_of).

    `records` are the scored records that gave the rows of `X` and `y`, in the same order."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    sets = np.array([r.get("set") or "all" for r in records], object)
    weights = set_weights(sets)
    cal = fit(method, names, X, y, model_sha256, fitted_on, weights)
    p = out_of_fold(X, y, weights=weights)
    cal.held_out = dict(cal.held_out or {})
    cal.held_out["mean_p"] = float(p.mean())
    cal.held_out["by_set"] = {
        s: measures(p[sets == s], y[sets == s]) | {"mean_p": float(p[sets == s].mean())}
        for s in sorted(set(sets))
    }
    cal.fitted_on["weights"] = "each question set weighs alike" if len(set(sets)) > 1 else "each answer alike"
    cal.fitted_on["sets"] = {
        s: {"n": int((sets == s).sum()), "right": int(y[sets == s].sum())} for s in sorted(set(sets))
    }
    cal.words = word_bounds(p, y, sets)
    asked = [(r.get("confidence") or {}).get("signals") or {} for r in records]
    cal.support = support_of(
        [[s[k] for k in QUESTION] for s in asked if all(s.get(k) is not None for k in QUESTION)]
    )
    return cal


def set_weights(sets) -> np.ndarray:
    """A weight per answer such that every question set weighs alike in a fit (mean 1): 200 hard
    questions count as much as 310 easier ones. Fitted on the kit's three sets with the hard set's
    halves held out in turn, the mean probability on the held-out half came 3-4 points nearer the
    share right than with every answer alike (a throwaway script; issue 32's note)."""
    sets = np.asarray(sets, object)
    names, counts = np.unique(sets, return_counts=True)
    per = dict(zip(names, 1.0 / counts, strict=True))
    w = np.array([per[s] for s in sets])
    return w / w.mean()


def fitted_line(cal: Calibration | None) -> str:
    """On what a calibration was fitted, in one line for the page and the terminal:
    "fitted on 710 chat answers of this model to 3 question sets (qa 310, 40 % right; ...)"
    (chat answers: given as the page gives them, research.confidence.calibration.fitted_style)."""
    if cal is None:
        return "no calibration for this model, so its answers show no confidence"
    f = cal.fitted_on or {}
    sets = f.get("sets") or {}
    parts = [
        f"{name[:40]} {s.get('n', 0)}, {round(100 * s.get('right', 0) / max(1, s.get('n', 0)))} % right"
        for name, s in list(sets.items())[:6]
    ]
    what = "rated answers" if f.get("source") == "ratings" else "answers"
    what = f"chat {what}" if what == "answers" and fitted_style(cal) == CHAT else what
    where = f" to {len(sets)} question set{'s' if len(sets) > 1 else ''} ({'; '.join(parts)})" if sets else ""
    words = getattr(cal, "words", None) or {}
    said = (
        f"; 'probably right' from {100 * words['probably right']:g} %"
        if words.get("probably right") is not None
        else ("; never 'probably right'" if words else "")
    )
    return f"confidence ({cal.method}) fitted on {f.get('n', '?')} {what} of this model{where}{said}"


def about(model_sha256: str, method: str | None = None) -> str:
    """fitted_line() of the calibration the page and `research chat` use for this model file."""
    try:
        method = method or methods.DEFAULT
        cal = load(model_sha256, method, CHAT) if model_sha256 else None
        if cal is None and model_sha256 and load(model_sha256, method) is not None:
            return (
                "confidence calibrated on eval's few-word answers only, not on chat answers like these: "
                "python -m research eval --as-page --calibrate fits one for them"
            )
        return fitted_line(cal)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):  # a file load() let by
        return methods.label(None)


# The confidence shown with an answer.
def of_signals(
    signals: dict | None, model_sha256: str, method: str = methods.DEFAULT, style: str = CHAT
) -> methods.Confidence:
    """The calibrated confidence of an answer with these signals, from the saved calibration of
    this model file and method for answers of its style (load: CHAT for the page's and the
    terminal's, EVAL for eval's); uncalibrated when there is none."""
    cal = load(model_sha256, method, style) if model_sha256 else None
    p = cal.probability(signals) if cal is not None and signals else None
    bad = cal is None and model_sha256 and damaged(model_sha256, method, style)
    far = p is not None and unlike(cal, signals)
    words = methods.DAMAGED if bad else methods.label(p, cal.words if cal else None, unlike=far)
    return methods.Confidence(p, method, cal.id if cal is not None and p is not None else None, words, far)


def of_stats(
    stats, model_sha256: str, method: str = methods.DEFAULT, style: str = CHAT
) -> methods.Confidence:
    """The calibrated confidence of an answer just streamed, from its Stats (the page calls this
    with `engine.sha256`); free methods only, as only those are in the Stats."""
    return of_signals(getattr(stats, "signals", None), model_sha256, method, style)

"""People's verdicts and the confidence shown: a person's ratings as labels, a calibration refitted
on them, and the answers where the two disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from research.confidence.methods import ANSWER_TYPE, DEFAULT, FREE, METHODS
from research.confidence.sampled import signals_for
from research.engine.signals import text_signals


def rating_label(rating: dict) -> float | None:
    """Right (1) or not (0) by a person's rating: the verdict first, then thumbs, then a score of
    4-5 or 1-2; None when it says neither ("partly correct", a score of 3, an A/B choice)."""
    verdict = rating.get("verdict")
    if verdict == "correct":
        return 1.0
    if verdict in ("wrong", "hallucinated", "refused"):
        return 0.0
    if verdict is not None:
        return None
    if rating.get("thumbs") in ("up", "down"):
        return 1.0 if rating["thumbs"] == "up" else 0.0
    score = rating.get("score")
    return None if score is None or score == 3 else float(score >= 4)


def rated_signals(engine, ratings: Sequence[dict]) -> tuple[list[dict], list[dict], int]:
    """The ratings of this engine's model file that say right or wrong, the latest per answer,
    with each answer's free signals: kept with the rating (`confidence_signals`) or recomputed
    by teacher forcing. Answers written from a library's passages are left out: their signals
    come from another prompt than the closed-book answers the calibration is for; so are the
    ratings of eval's answers (notebook 03's rater): the calibration they make is of chat
    answers (research.confidence.calibration.CHAT). A rating kept before a signal of the answer's
    words existed gains it from its answer (type_match). Returns (ratings, signals, how many were
    recomputed)."""
    latest: dict = {}
    for r in ratings:
        if (
            r.get("model_sha256") == engine.sha256
            and r.get("source") != "notebook"
            and not (r.get("library") or {}).get("looked_up")
            and str(r.get("answer") or "").strip()
            and rating_label(r) is not None
        ):
            latest[r.get("answer_id") or r.get("id")] = r
    kept, signals, forced = [], [], 0
    for r in latest.values():
        got = r.get("confidence_signals")
        if not got or any(k not in got for k in FREE):  # none kept, or some the kit reads now
            messages = ([{"role": "system", "content": r["system"]}] if r.get("system") else []) + [
                {"role": "user", "content": r["question"]}
            ]
            got, forced = signals_for(engine, messages, r["answer"]), forced + 1
        elif "type_match" not in got:
            got = got | text_signals(str(r["answer"]), str(r.get("question") or ""))
        if got:
            kept.append(r)
            signals.append(got)
    return kept, signals, forced


def recalibrate(engine, ratings: Sequence[dict], method: str = DEFAULT, root=None):
    """Fit `method` (a free one) to a person's ratings of this model and save it as their
    calibration of this model file. Returns (calibration, path, answers recomputed)."""
    from research.confidence import calibration
    from research.errors import KitError

    names = METHODS[method].signals
    if not set(names) <= set(FREE + ANSWER_TYPE):
        raise KitError(f"ratings keep only the free signals; {method!r} needs {', '.join(names)}")
    kept, signals, forced = rated_signals(engine, ratings)
    X = [[sig[k] for k in names] for sig in signals]
    y = [rating_label(r) for r in kept]
    fitted_on = {
        "source": "ratings",
        "label": "a person's verdict, thumbs or score",
        "rating_ids": [r.get("id") for r in kept],
        "question_ids": [r.get("question_id") for r in kept if r.get("question_id")],
    }
    cal = calibration.fit(method, names, X, y, engine.sha256, fitted_on)
    return cal, calibration.save(cal, root), forced


def disagreements(ratings: Sequence[dict], signals: Sequence[dict], cal) -> list[dict]:
    """Rated answers where the calibrated confidence and the person disagree: confident (50 % or
    more) and judged wrong, or doubtful and judged right; the most confident mistakes first."""
    out = []
    for r, sig in zip(ratings, signals, strict=True):
        p, right = cal.probability(sig), rating_label(r)
        if p is not None and right is not None and (p >= 0.5) != bool(right):
            out.append(
                {
                    "question": r["question"],
                    "answer": r["answer"],
                    "p": p,
                    "person": r.get("verdict") or r.get("thumbs"),
                }
            )
    return sorted(out, key=lambda d: -abs(d["p"] - 0.5))

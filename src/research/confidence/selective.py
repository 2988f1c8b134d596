"""Selective answering: how well each confidence method sorts right answers from wrong ones on
evaluation records, and what "answer only when sure" buys.

Every figure is taken on held-out answers (held_out): a calibration saved for the model that was
fitted on other questions is applied as it is; otherwise a stratified k-fold cross-validation on
the records themselves gives each answer a probability from a fit that never saw it. The
figures are those of the literature on selective prediction (AUROC, the risk-coverage curve,
accuracy at a coverage, expected calibration error), with 95 % bootstrap intervals.
"""

from __future__ import annotations

import numpy as np

from research.confidence.calibration import (
    BOOTSTRAP,
    EVAL,
    FOLDS,
    load,
    out_of_fold,
    risk_coverage,
    style_of,
    with_intervals,
)

#: The words that say an answer is more likely right than wrong.
CONFIDENT = ("probably right", "likely right")


def labelled(
    records: list[dict], names: tuple[str, ...], key: str = "contains"
) -> tuple[np.ndarray, np.ndarray, list]:
    """(signals, right?, ids) of the scored records that carry every signal in `names`."""
    rows, labels, ids = [], [], []
    for r in records:
        signals = (r.get("confidence") or {}).get("signals") or {}
        if r.get("scores") is None or any(signals.get(k) is None for k in names):
            continue
        rows.append([float(signals[k]) for k in names])
        labels.append(float(r["scores"][key]))
        ids.append(r.get("id"))
    return np.asarray(rows, float).reshape(len(rows), len(names)), np.asarray(labels, float), ids


def held_out(records: list[dict], method: str, model_sha256: str | None = None) -> dict | None:
    """Out-of-fold probabilities of one method on these records, and how they were held out.

    A calibration saved for this model and method that was fitted on none of these questions (and,
    for a sampled method, on as many samples made the same way) is used as it is (the truest
    test: other questions, another day); otherwise a stratified k-fold
    cross-validation on the records themselves. None when the records lack its signals.
    Returns {"p", "y", "ids", "how", "unlike"} (and "words" with a saved calibration).
    """
    from research.confidence import methods as confidence

    names = confidence.METHODS[method].signals
    X, y, ids = labelled(records, names)
    if len(y) < 2 * FOLDS:
        return None
    style = style_of(records[0].get("system")) if records else EVAL
    saved = load(model_sha256, method, style) if model_sha256 else None
    # A saved calibration is judged even where no answer (or every one) is right: the hard sets'
    # case, where its mean probability against the share right says the most.
    if (
        saved is not None
        and tuple(saved.model.names) == names
        and not set(ids) & set(saved.fitted_on.get("question_ids", ()))
        and _same_samples(saved, records, confidence.METHODS[method].cost)
    ):
        p, far, words = shown(saved, X, _signals_of(records, ids))
        return {
            "p": p,
            "y": y,
            "ids": ids,
            "how": f"calibration {saved.id}, fitted on other questions",
            "words": words,
            "unlike": far,
        }
    if y.sum() < 2 or (1 - y).sum() < 2:
        return None
    return {
        "p": out_of_fold(X, y),
        "y": y,
        "ids": ids,
        "how": f"{FOLDS}-fold cross-validation",
        "unlike": np.zeros(len(y), bool),  # no support to judge by: every question alike
    }


def _signals_of(records: list[dict], ids: list) -> list[dict]:
    by_id = {r.get("id"): r for r in records}
    return [(by_id[i].get("confidence") or {}).get("signals") or {} for i in ids]


def shown(cal, X, signals: list[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What the page shows for answers with these rows of `cal`'s signals (X) and these signals:
    each one's probability, whether its question is unlike cal's (transfer.unlike) and its words."""
    from research.confidence import methods
    from research.confidence.transfer import unlike

    p = cal.model.predict(X)
    far = np.array([unlike(cal, s) for s in signals], bool)
    return p, far, [methods.describe(q, cal.words, f)[0] for q, f in zip(p, far, strict=True)]


def judged(cal, records: list[dict]) -> dict:
    """A saved calibration `cal` applied as it is to scored records: their share right, its mean
    probability (and over the answers shown with a number), AUROC, ECE and Brier score, the
    answers worded "probably right" or "likely right" and how many of them were right, and the
    share of questions unlike its own. Empty when the records lack its signals."""
    from research.confidence.calibration import auroc, brier, ece

    X, y, ids = labelled(records, tuple(cal.model.names))
    if not len(y):
        return {}
    p, far, words = shown(cal, X, _signals_of(records, ids))
    said = np.array([w in CONFIDENT for w in words])
    return {
        "answers": len(y),
        "right": float(y.mean()),
        "mean confidence": float(p.mean()),
        "mean of numbers shown": float(p[~far].mean()) if (~far).any() else float("nan"),
        "AUROC": auroc(p, y),
        "ECE": ece(p, y),
        "Brier": brier(p, y),
        "worded probably/likely right": int(said.sum()),
        "of them right": int(y[said].sum()),
        "unlike its questions": float(far.mean()),
    }


def _same_samples(saved, records: list[dict], cost: str) -> bool:
    """Whether a saved calibration of a sampled method was fitted on as many samples, made the
    same way, as these records carry (the count of meanings, eigv, runs up to k + 1)."""
    if cost != "samples":
        return True
    fitted = saved.fitted_on.get("samples")
    return all(
        (r.get("confidence") or {}).get("settings", {}).get("samples") == fitted
        for r in records
        if r.get("scores") is not None
    )


#: Repetitions of the nested cross-validation, each with other folds: one assignment of answers to
#: folds moved the kit's nested AUROC between 0.76 and 0.80 on the same 310 answers.
REPEATS = 10


def selected(records: list[dict], bootstrap: int = BOOTSTRAP, repeats: int = REPEATS) -> dict | None:
    """The best method as a user would meet it: chosen without looking at the answers it is judged on.

    Picking the method with the highest AUROC in report() and quoting that AUROC leans optimistic
    (the maximum of several noisy figures). Here, in each of FOLDS outer folds, the method is chosen
    by its cross-validated AUROC on the other folds alone, fitted on them, and applied to the
    fold; the figures are those of all folds' answers (nested cross-validation). Only methods whose
    signals every record carries compete, so all are judged on the same answers. None without them.

    Which answers share a fold moves the result by a few hundredths, so the whole is repeated
    `repeats` times with other folds: the figures are the means over the repetitions (their range in
    "auroc_range"), the 95 % intervals those of the first repetition's bootstrap moved by the same
    amount as its AUROC, and "chosen" every pick of every repetition.
    """
    from research.confidence import methods as confidence
    from research.confidence.calibration import Logistic, auroc, folds, measures

    every = [r.get("id") for r in records if r.get("scores") is not None]
    signals, y = {}, None  # method -> its signals on every scored record; right or wrong
    for name, method in confidence.METHODS.items():
        X, y_m, ids = labelled(records, method.signals)
        if ids == every:
            signals[name], y = X, y_m
    if y is None or y.sum() < 2 * FOLDS or (1 - y).sum() < 2 * FOLDS:
        return None
    runs, chosen, first = [], [], None
    for rep in range(repeats):
        outer = folds(y, FOLDS, seed=rep + 1)
        p = np.empty(len(y))
        for f in range(FOLDS):
            train, test = outer != f, outer == f
            inner = {
                k: auroc(out_of_fold(X[train], y[train], seed=rep), y[train]) for k, X in signals.items()
            }
            best = max(inner, key=inner.get)
            chosen.append(best)
            X = signals[best]
            p[test] = Logistic(()).fit(X[train], y[train]).predict(X[test])
        runs.append(measures(p, y))
        first = first or with_intervals(p, y, n=bootstrap)
    out = dict(first)
    for k in ("auroc", "acc@50", "acc@80", "accuracy", "ece", "brier"):
        mean = float(np.mean([r[k] for r in runs]))
        lo, hi = first[k + "_ci"]
        out[k], out[k + "_ci"] = mean, (lo + mean - first[k], hi + mean - first[k])
    aurocs = [r["auroc"] for r in runs]
    return out | {
        "chosen": chosen,
        "auroc_range": (min(aurocs), max(aurocs)),
        "repeats": repeats,
        "how": f"nested {FOLDS}-fold cross-validation, {repeats} times with other folds",
    }


def report(
    records: list[dict], model_sha256: str | None = None, bootstrap: int = BOOTSTRAP, only=None
) -> dict:
    """Per method whose signals the records carry (or of `only`'s): AUROC, accuracy at 50 % and
    80 % coverage, ECE, each with a 95 % interval, on held-out answers (held_out), and the
    risk-coverage curve. Where a saved calibration was applied, also how its words did: the
    answers worded "probably right" or "likely right" and how many of those were right
    ("worded"), and the share of questions unlike those it was fitted on ("unlike")."""
    from research.confidence import methods as confidence

    out = {}
    for name, method in confidence.METHODS.items():
        if only is not None and name not in only:
            continue
        got = held_out(records, name, model_sha256)
        if got is None:
            continue
        m = with_intervals(got["p"], got["y"], n=bootstrap)
        cov, acc = risk_coverage(got["p"], got["y"])
        steps = np.linspace(0.1, 1.0, 10)
        curve = [float(acc[max(0, int(round(c * len(acc))) - 1)]) for c in steps]
        out[name] = m | {
            "mean_p": float(got["p"].mean()),
            "cost": method.cost,
            "how": got["how"],
            "coverage": steps.round(2).tolist(),
            "risk_coverage": curve,
        }
        if "words" in got:
            said = np.array([w in CONFIDENT for w in got["words"]])
            out[name]["worded"] = {"n": int(said.sum()), "right": int(got["y"][said].sum())}
            out[name]["unlike"] = float(got["unlike"].mean())
    return out


def _label_rates(labels: list, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each answer's probability from the share right, in the other folds, of answers with its label
    (one pseudo-answer at those folds' share right keeps a label seen once or never from 0 or 1)."""
    p = np.empty(len(y))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        base = y[train].mean()
        for i in np.flatnonzero(test):
            same = train & np.array([label == labels[i] for label in labels])
            p[i] = (y[same].sum() + base) / (same.sum() + 1)
    return p


def baselines(records: list[dict], bootstrap: int = BOOTSTRAP) -> dict:
    """Trivial predictors of a right answer that read no signal of the model, held out as report()'s
    methods are (FOLDS-fold cross-validation), for its table: a method is worth its cost only where it
    beats them. "constant": each fold's share right of the other folds, ranking no answer above
    another (AUROC 0.5), with an ECE near 0: why the Brier score stands beside the ECE; "length": a
    logistic fit on the answer's length in words; "difficulty" and "topic": the share right of the
    question's label in the other folds, where the answers carry two labels or more. Rows as
    report()'s, without the curve."""
    from research.confidence.calibration import folds

    scored = [r for r in records if r.get("scores") is not None]
    y = np.array([float(r["scores"]["contains"]) for r in scored])
    if len(y) < 2 * FOLDS or y.sum() < 2 or (1 - y).sum() < 2:
        return {}
    fold = folds(y, FOLDS)
    words = [[float(len((r.get("answer") or "").split()))] for r in scored]
    probs = {"constant": out_of_fold(np.zeros((len(y), 1)), y), "length": out_of_fold(words, y)}
    for key in ("difficulty", "topic"):
        labels = [r.get(key) for r in scored]
        if len({label for label in labels if label is not None}) >= 2:
            probs[key] = _label_rates(labels, y, fold)
    # The constant ranks no answer above another: each fold's share right differs from the next by
    # the fold's own answers, and ranking by it put the constant's AUROC at 0.43 on notebook 04's 20.
    ranks = {"constant": np.zeros(len(y))}
    return {
        name: with_intervals(p, y, ranks.get(name), n=bootstrap)
        | {"mean_p": float(p.mean()), "cost": "none", "how": f"{FOLDS}-fold cross-validation"}
        for name, p in probs.items()
    }


def abstention(
    records: list[dict], method: str, below: float, model_sha256: str | None = None
) -> dict | None:
    """What "answer only when sure" gives: answers under `below` (held-out probability) count as
    refusals. Returns the share answered, the accuracy of those, and the hallucinated share of
    all questions before and after."""
    got = held_out(records, method, model_sha256)
    if got is None:
        return None
    by_id = {r.get("id"): r for r in records}
    # as the page withholds them: below the threshold, or unlike the calibration's questions
    kept = (got["p"] >= below) & ~got["unlike"]
    halluc = np.array([bool(by_id[i]["scores"]["hallucinated"]) for i in got["ids"]])
    n = len(kept)
    return {
        "method": method,
        "below": below,
        "answered": float(kept.mean()),
        "accuracy_answered": float(got["y"][kept].mean()) if kept.any() else float("nan"),
        "accuracy_all": float(got["y"].mean()),
        "hallucinated_before": float(halluc.mean()),
        "hallucinated_after": float((halluc & kept).sum() / n),
        "abstained": float((~kept).sum() / n),
        "how": got["how"],
    }


def abstention_table(records: list[dict], method: str, thresholds, model_sha256: str | None = None) -> list:
    """abstention() at each threshold: what each "answer only when sure" setting buys."""
    return [row for t in thresholds if (row := abstention(records, method, t, model_sha256))]


def tuned_elsewhere(
    records: list[dict],
    method: str,
    thresholds,
    wrong_cost: float,
    model_sha256: str | None = None,
    seed: int = 0,
) -> dict | None:
    """Answer only when sure, with the threshold tuned on one half of the answers and judged on the
    other, so the figure quoted is not the best of several on the answers that picked it.

    Cost per question: `wrong_cost` for a wrong answer stated as a fact, 1 for an unanswered one.
    The halves are stratified by right and wrong; the probabilities are held out as abstention()'s.
    Returns the cost of each threshold on the tuning half ("tuning"), the cheapest ("threshold"), its
    cost on the other half ("cost") against answering everything there ("answer_all"), the halves'
    sizes ("n_tune", "n_scored") and "how". None when the records lack the method's signals."""
    from research.confidence.calibration import folds

    got = held_out(records, method, model_sha256)
    if got is None:
        return None
    by_id = {r.get("id"): r for r in records}
    halluc = np.array([bool(by_id[i]["scores"]["hallucinated"]) for i in got["ids"]])
    tune = folds(got["y"], 2, seed) == 0

    def cost(part, below):
        kept = (got["p"][part] >= below) & ~got["unlike"][part]
        return float((wrong_cost * (halluc[part] & kept).sum() + (~kept).sum()) / part.sum())

    tuning = {t: cost(tune, t) for t in thresholds}
    best = min(tuning, key=tuning.get)
    return {
        "tuning": tuning,
        "threshold": best,
        "cost": cost(~tune, best),
        "answer_all": cost(~tune, 0.0),
        "n_tune": int(tune.sum()),
        "n_scored": int((~tune).sum()),
        "how": got["how"],
    }


def chosen_beforehand(rep: dict) -> str | None:
    """The kit's chosen method (confidence.CHOSEN) when a report() judged it with a calibration
    fitted on other questions: nothing about these answers chose or fitted it. Else None."""
    from research.confidence import methods as confidence

    m = rep.get(confidence.CHOSEN)
    return confidence.CHOSEN if m is not None and calibrated(m) else None


def calibrated(m: dict) -> bool:
    """Whether a report() row was held out by a saved calibration fitted on other questions
    (held_out), rather than cross-validated on the records themselves."""
    return m["how"].startswith("calibration")


def best_method(rep: dict) -> str:
    """The method with the highest held-out AUROC in a report()."""
    return max(rep, key=lambda k: rep[k]["auroc"])

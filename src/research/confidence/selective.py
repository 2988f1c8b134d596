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
    FOLDS,
    load,
    out_of_fold,
    risk_coverage,
    with_intervals,
)


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
    Returns {"p", "y", "ids", "how"}.
    """
    from research.confidence import methods as confidence

    names = confidence.METHODS[method].signals
    X, y, ids = labelled(records, names)
    if len(y) < 2 * FOLDS or y.sum() < 2 or (1 - y).sum() < 2:
        return None
    saved = load(model_sha256, method) if model_sha256 else None
    if (
        saved is not None
        and tuple(saved.model.names) == names
        and not set(ids) & set(saved.fitted_on.get("question_ids", ()))
        and _same_samples(saved, records, confidence.METHODS[method].cost)
    ):
        return {
            "p": saved.model.predict(X),
            "y": y,
            "ids": ids,
            "how": f"calibration {saved.id}, fitted on other questions",
        }
    return {"p": out_of_fold(X, y), "y": y, "ids": ids, "how": f"{FOLDS}-fold cross-validation"}


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


def report(records: list[dict], model_sha256: str | None = None, bootstrap: int = BOOTSTRAP) -> dict:
    """Per method whose signals the records carry: AUROC, accuracy at 50 % and 80 % coverage,
    ECE, each with a 95 % interval, on held-out answers (held_out), and the risk-coverage curve."""
    from research.confidence import methods as confidence

    out = {}
    for name, method in confidence.METHODS.items():
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
    kept = got["p"] >= below
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


def includes_chance(m: dict) -> bool:
    """Whether a row's AUROC interval holds 0.5: on these answers a sort no better than a coin
    cannot be ruled out, however far the point lies from 0.5, above or below."""
    lo, hi = m.get("auroc_ci", (np.nan, np.nan))
    return bool(lo <= 0.5 <= hi)


def format_report(
    rep: dict, costs: dict | None = None, chosen: dict | None = None, baselines: dict | None = None
) -> str:
    """The method table with intervals, then the issue's targets and the cost of each method.

    Beside each ECE its Brier score (a near-constant probability has a small ECE, not a small Brier),
    an AUROC whose interval holds 0.5 marked "~" (indistinguishable from chance), and under the
    methods the trivial `baselines` (baselines()) judged the same way.

    The targets are judged on the truest figure the records allow: the kit's chosen method
    (confidence.CHOSEN) when its saved calibration was fitted on other questions (nothing about
    these answers chose or fitted it), else the method chosen by nested cross-validation when
    `chosen`, selected()'s result, is given, else the best of the table (which flatters)."""
    from collections import Counter

    from research.confidence import methods as confidence

    if not rep:
        return "confidence: no method's signals in these records"
    any_m = next(iter(rep.values()))
    hows = {m["how"] for m in rep.values()}
    how = any_m["how"]
    if len(hows) > 1:  # some methods have a saved calibration fitted on other questions, some not
        how = "a saved calibration fitted on other questions; * 5-fold cross-validation, where none applies"
    lines = [
        f"confidence, on held-out answers ({how}; right = contains a reference, "
        f"{any_m['accuracy']:.1%} of {any_m['n']}), 95 % bootstrap intervals:",
        f"{'method':17} {'cost':10} {'AUROC':>19} {'acc@50%':>19} {'acc@80%':>19} {'ECE':>19} {'Brier':>19}",
    ]

    def cell(m, k, fmt):
        return with_ci(m, k, fmt).rjust(19)

    def row(name, m):
        auroc = cell(m, "auroc", ".2f")[1:] + ("~" if includes_chance(m) else " ")
        return (
            f"{name:17} {m['cost']:10} {auroc} {cell(m, 'acc@50', '.1%')} "
            f"{cell(m, 'acc@80', '.1%')} {cell(m, 'ece', '.3f')} {cell(m, 'brier', '.3f')}"
        )

    for name, m in rep.items():
        lines.append(row(name + ("*" if len(hows) > 1 and not _calibrated(m) else ""), m))
    if baselines:
        lines.append(f"baselines, no signal of the model ({FOLDS}-fold cross-validation, the same answers):")
        lines += [row(name, m) for name, m in baselines.items()]
    if any(includes_chance(m) for m in [*rep.values(), *(baselines or {}).values()]):
        lines.append("~: the AUROC's 95 % interval holds 0.5: not told from a coin on these answers")
    best = best_method(rep)
    b = rep[best]
    best = f"{best}, the best of {len(rep)} on these same answers: it flatters" if len(rep) > 1 else best
    if chosen:
        picks = Counter(chosen["chosen"]).most_common()
        picks = ", ".join(f"{k} {n}" for k, n in picks)
        lo, hi = chosen["auroc_ci"]
        low, high = chosen.get("auroc_range", (chosen["auroc"], chosen["auroc"]))
        lines.append(
            f"the best method chosen on other answers than it is judged on ({chosen['how']}; chosen: "
            f"{picks}): AUROC {chosen['auroc']:.3f} [{lo:.2f}-{hi:.2f}] ({low:.3f}-{high:.3f} over the "
            f"repetitions), accuracy at 50 % coverage {chosen['acc@50']:.1%} = "
            f"{chosen['acc@50'] / chosen['accuracy']:.2f} x overall"
        )
        b, best = chosen, "nested choice"
    if chosen_beforehand(rep):
        fixed = rep[confidence.CHOSEN]
        lo, hi = fixed["auroc_ci"]
        lines.append(
            f"the kit's chosen method, {confidence.CHOSEN}, fixed before these answers and calibrated on "
            f"other questions: AUROC {fixed['auroc']:.2f} [{lo:.2f}-{hi:.2f}], accuracy at 50 % coverage "
            f"{fixed['acc@50']:.1%} = {fixed['acc@50'] / fixed['accuracy']:.2f} x overall"
        )
        b, best = fixed, f"{confidence.CHOSEN}, chosen beforehand"
    if includes_chance(b):
        best += f"; its interval, {b['auroc_ci'][0]:.2f}-{b['auroc_ci'][1]:.2f}, holds chance"
    lines.append(
        f"targets: best AUROC {b['auroc']:.2f} ({best}; target 0.80: {_met(b['auroc'] >= 0.8)}); "
        f"accuracy at 50 % coverage {b['acc@50'] / b['accuracy']:.2f} x overall "
        f"(target 1.5: {_met(b['acc@50'] >= 1.5 * b['accuracy'])})"
    )
    lines += drift_lines(rep)
    if costs:
        lines.append("cost: " + "; ".join(costs_lines(costs)))
    return "\n".join(lines)


#: How far a saved calibration's mean probability may sit from the share right before the summary
#: says its numbers run high or low on these questions (10 points, and outside the share's 95 %
#: interval: on a dozen answers 12 points is chance).
DRIFT = 0.10


def drift_lines(rep: dict) -> list[str]:
    """Calibration in the large for the methods people see (the page's, and the kit's chosen one)
    where a saved calibration was applied as it is: its mean probability against the share of
    answers that are right. A calibration fitted where the model was right 44 % of the time
    says too much on questions it gets right 5 % of the time, however well it sorts them."""
    from research.confidence import methods as confidence

    out = []
    for name in dict.fromkeys((confidence.DEFAULT, confidence.CHOSEN)):
        m = rep.get(name)
        if m is None or not _calibrated(m):
            continue
        gap = m["mean_p"] - m["accuracy"]
        line = f"calibration in the large, {name}: {m['mean_p']:.1%} on average, {m['accuracy']:.1%} right"
        lo, hi = m["accuracy_ci"]
        if abs(gap) > DRIFT and not lo <= m["mean_p"] <= hi:  # beyond what chance alone gives
            line += (
                f": its numbers run {'high' if gap > 0 else 'low'} on these questions by "
                f"{abs(gap) * 100:.0f} points; `eval --calibrate` fits one on them, `eval "
                "--from-ratings` on your ratings"
            )
        out.append(line)
    return out


def costs_lines(costs: dict) -> list[str]:
    """`{"signal_s": .., "decode_s": .., "answer_s": .., "samples_s": ..}` in words, per answer."""
    out = []
    if costs.get("decode_s"):
        ratio = costs["signal_s"] / costs["decode_s"]
        out.append(
            f"free signals {costs['signal_s'] * 1e3:.1f} ms of {costs['decode_s']:.2f} s decoding = "
            f"{ratio:.2%} (target at most 5 %: {_met(ratio <= 0.05)})"
        )
    for key, what in (("samples_s", "sampled answers"), ("p_true_s", "P(True)")):
        if costs.get(key) is not None and costs.get("answer_s"):
            out.append(
                f"{what} {costs[key]:.2f} s = {costs[key] / costs['answer_s']:.1f} x the answer's own time"
            )
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


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
        kept = got["p"][part] >= below
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


def with_ci(m: dict, key: str, fmt: str = ".2f") -> str:
    """A report() row's figure with its 95 % interval, for tables: `0.72 [0.44-0.94]`."""
    lo, hi = m[key + "_ci"]
    return f"{format(m[key], fmt)} [{format(lo, fmt)}-{format(hi, fmt)}]"


def table_row(rep: dict, base: dict, method: str) -> dict:
    """One line of a notebook's confidence table: `method`'s figures in a report() with their 95 %
    intervals (AUROC marked "~" where its interval holds 0.5), and the baselines() beside them (the
    AUROC of each label or length, the Brier score of the constant). Empty without the method."""
    m = rep.get(method)
    if m is None:
        return {}
    row = {"answers": m["n"], "right": round(m["accuracy"], 3)}
    row[f"AUROC {method}"] = with_ci(m, "auroc") + ("~" if includes_chance(m) else "")
    row |= {f"Brier {method}": with_ci(m, "brier", ".3f"), f"ECE {method}": with_ci(m, "ece", ".3f")}
    row["mean confidence"] = round(m["mean_p"], 3)
    for name, b in base.items():
        if name == "constant":
            row["Brier constant"] = with_ci(b, "brier", ".3f")
        else:
            row[f"AUROC {name}"] = with_ci(b, "auroc") + ("~" if includes_chance(b) else "")
    return row | {"held out by": m["how"]}


def chosen_beforehand(rep: dict) -> str | None:
    """The kit's chosen method (confidence.CHOSEN) when a report() judged it with a calibration
    fitted on other questions: nothing about these answers chose or fitted it. Else None."""
    from research.confidence import methods as confidence

    m = rep.get(confidence.CHOSEN)
    return confidence.CHOSEN if m is not None and _calibrated(m) else None


def _calibrated(m: dict) -> bool:
    """Whether a report() row was held out by a saved calibration fitted on other questions
    (held_out), rather than cross-validated on the records themselves."""
    return m["how"].startswith("calibration")


def best_method(rep: dict) -> str:
    """The method with the highest held-out AUROC in a report()."""
    return max(rep, key=lambda k: rep[k]["auroc"])

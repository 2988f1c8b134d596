"""The selective-answering report (research.confidence.selective) in words: the method table with
its intervals, Brier scores and baselines, the targets judged on the truest figure the records
allow, calibration in the large, the signals' cost, and the rows of the notebooks' tables.
"""

from __future__ import annotations

import numpy as np

from research.confidence.calibration import FOLDS
from research.confidence.selective import best_method, calibrated, chosen_beforehand


def includes_chance(m: dict) -> bool:
    """Whether a row's AUROC interval holds 0.5: on these answers a sort no better than a coin
    cannot be ruled out, however far the point lies from 0.5, above or below."""
    lo, hi = m.get("auroc_ci", (np.nan, np.nan))
    return bool(lo <= 0.5 <= hi)


def format_report(
    rep: dict,
    costs: dict | None = None,
    chosen: dict | None = None,
    baselines: dict | None = None,
    by_set: dict | None = None,
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
    lines = method_table(rep, baselines)
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
            f"repetitions), accuracy at 50 % coverage {chosen['acc@50']:.1%} = {_times(chosen)}"
        )
        b, best = chosen, "nested choice"
    if chosen_beforehand(rep):
        fixed = rep[confidence.CHOSEN]
        lo, hi = fixed["auroc_ci"]
        lines.append(
            f"the kit's chosen method, {confidence.CHOSEN}, fixed before these answers and calibrated on "
            f"other questions: AUROC {fixed['auroc']:.2f} [{lo:.2f}-{hi:.2f}], accuracy at 50 % coverage "
            f"{fixed['acc@50']:.1%} = {_times(fixed)}"
        )
        b, best = fixed, f"{confidence.CHOSEN}, chosen beforehand"
    if includes_chance(b):
        best += f"; its interval, {b['auroc_ci'][0]:.2f}-{b['auroc_ci'][1]:.2f}, holds chance"
    if not 0 < b["accuracy"] < 1:  # no AUROC, no multiple: nothing to judge the targets by
        lines.append(f"targets: not judged: {b['accuracy']:.0%} of these answers are right")
    else:
        lines.append(
            f"targets: best AUROC {b['auroc']:.2f} ({best}; target 0.80: {_met(b['auroc'] >= 0.8)}); "
            f"accuracy at 50 % coverage {_times(b)} (target 1.5: {_met(b['acc@50'] >= 1.5 * b['accuracy'])})"
        )
    lines += drift_lines(rep)
    lines += words_lines(rep, by_set)
    if costs:
        lines.append("cost: " + "; ".join(costs_lines(costs)))
    return "\n".join(lines)


def method_table(rep: dict, baselines: dict | None = None) -> list[str]:
    """format_report()'s table: a line per method, then the baselines, each AUROC interval that
    holds 0.5 marked "~"."""
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
        lines.append(row(name + ("*" if len(hows) > 1 and not calibrated(m) else ""), m))
    if baselines:
        lines.append(f"baselines, no signal of the model ({FOLDS}-fold cross-validation, the same answers):")
        lines += [row(name, m) for name, m in baselines.items()]
    if any(includes_chance(m) for m in [*rep.values(), *(baselines or {}).values()]):
        lines.append("~: the AUROC's 95 % interval holds 0.5: not told from a coin on these answers")
    return lines


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
        if m is None or not calibrated(m):
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


#: A hard question set, for the targets of a confidence that transfers: the model right less often.
HARD = 0.15
#: What answers worded "probably right" or "likely right" must be right at least, on every set.
WORDED = 0.5


def words_lines(rep: dict, by_set: dict | None = None) -> list[str]:
    """How the page's words did where its saved calibration was applied as it is: the answers
    worded "probably right" or "likely right" and how many were right (target: at least half),
    the share of questions unlike the calibration's; then, per question set, its share right, the
    mean confidence, the AUROC and the worded answers, with the targets of a set where the model
    is right less than HARD of the time (mean confidence within DRIFT of the share right,
    worded answers right at least WORDED, AUROC at least 0.75)."""
    from research.confidence import methods as confidence

    out = []
    m = rep.get(confidence.DEFAULT)
    if m is not None and "worded" in m:
        out.append(
            f"words, {confidence.DEFAULT}: {_worded(m)}; "
            f"{m['unlike']:.1%} of the questions unlike its calibration's"
        )
    for name, b in (by_set or {}).items():
        how = "its calibration, fitted on other questions" if calibrated(b) else "cross-validated"
        line = (
            f"  set {name}: {b['n']} answers, {b['accuracy']:.1%} right, mean confidence {b['mean_p']:.1%}, "
            f"AUROC {b['auroc']:.2f} ({how})"
        )
        if "worded" in b:
            line += f"; {_worded(b)}"
        if b["accuracy"] < HARD and calibrated(b):
            w = b.get("worded") or {"n": 0, "right": 0}
            ok = (
                abs(b["mean_p"] - b["accuracy"]) <= DRIFT,
                w["n"] == 0 or w["right"] >= WORDED * w["n"],
                b["auroc"] >= 0.75,
            )
            line += (
                f"; hard-set targets: mean within {DRIFT * 100:.0f} points {_met(ok[0])}, worded right "
                f"{WORDED:.0%} {_met(ok[1])}, AUROC 0.75 {_met(ok[2])}"
            )
        out.append(line)
    return out


def _worded(m: dict) -> str:
    w = m["worded"]
    share = f" ({w['right'] / w['n']:.0%})" if w["n"] else ""
    return f"worded probably or likely right {w['n']}, of them right {w['right']}{share}"


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


def _times(m: dict) -> str:
    """Accuracy at 50 % coverage as a multiple of the overall accuracy: "1.69 x overall", or why
    there is none (no answer right: the questions of a hard set, answered as the page answers)."""
    if not m["accuracy"]:
        return "no multiple of overall (no answer right)"
    return f"{m['acc@50'] / m['accuracy']:.2f} x overall"


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


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

"""Two runs on the same questions, compared: can anyone tell them apart?

Before asking people to judge two files blind, the records already say how often the two
answers are the very same text (no one can tell those apart) and where one contains a
reference and the other does not. After, the people's choices (research.ratings.rater.tally) give a
preference share with its 95 % Wilson interval: an interval that holds 50 % means the people
could not tell which file is better.
"""

from __future__ import annotations

from research.evaluation.run import mcnemar, wilson


def compare(run_a: list[dict], run_b: list[dict], key: str = "contains") -> dict:
    """Paired outcomes of two runs (research.evaluation.run.run records) on their common questions:
    {"n", "identical", "both_right", "only_a", "only_b", "both_wrong"} by the `key` score ("right"
    meaning that score is true: for "hallucinated", hallucinated).

    `compare([{"id": 1, "answer": "Paris", "scores": {"contains": True}}],
    [{"id": 1, "answer": "Paris.", "scores": {"contains": True}}])` -> n 1, both_right 1.
    """
    b_by_id = {r["id"]: r for r in run_b if r.get("scores")}
    out = dict.fromkeys(("n", "identical", "both_right", "only_a", "only_b", "both_wrong"), 0)
    for a in run_a:
        b = b_by_id.get(a["id"])
        if not a.get("scores") or b is None:
            continue
        out["n"] += 1
        out["identical"] += a["answer"].strip() == b["answer"].strip()
        ra, rb = bool(a["scores"][key]), bool(b["scores"][key])
        outcome = "both_right" if ra and rb else "only_a" if ra else "only_b" if rb else "both_wrong"
        out[outcome] += 1
    return out


def sign_test(paired: dict) -> float:
    """Exact two-sided McNemar test (a sign test on the questions where only one run scores): the
    chance of a split at least this uneven if both runs were equally good. The questions both runs
    score alike say nothing about which is better. `sign_test({"only_a": 0, "only_b": 5})` -> 0.0625."""
    return mcnemar(paired["only_a"], paired["only_b"])


def paired_verdict(paired: dict, name_a: str, name_b: str, what: str) -> str:
    """One sentence on compare()'s outcomes of two runs: on how many questions answers `what` with
    both and with only one, the paired difference, and the sign test's answer (p < 0.05: beyond
    chance; else no difference shown)."""
    n, b, c = paired["n"], paired["only_a"], paired["only_b"]
    if not n:
        return f"no common questions between {name_a} and {name_b}"
    p = sign_test(paired)
    line = (
        f"of the same {n} questions, {paired['both_right']} {what} with both, {b} only with {name_a}, "
        f"{c} only with {name_b} ({(b - c) / n:+.0%} for {name_a}; exact sign test on the {b + c} that "
        f"differ: p = {p:.2f})"
    )
    if p < 0.05:
        return line + f": more {what} with {name_a if b > c else name_b}, beyond chance"
    return line + ": no difference these questions can show"


def preference(tally_row: dict | None, name: str) -> dict:
    """How often people preferred `name` among the decided choices of one pair of a
    research.ratings.rater.tally() result, with its 95 % Wilson interval; ties and "both wrong" apart.

    `preference({"wins": {"a": 6, "b": 4}, "tie": 1, "both wrong": 2, "n": 13}, "a")` -> share 0.6.
    """
    if not tally_row:
        return {"n": 0, "decided": 0, "share": None, "ci": (0.0, 1.0), "tie": 0, "both wrong": 0}
    wins = tally_row["wins"]
    decided = sum(wins.values())
    k = wins.get(name, 0)
    return {
        "n": tally_row["n"],
        "decided": decided,
        "share": k / decided if decided else None,
        "ci": wilson(k, decided) if decided else (0.0, 1.0),
        "tie": tally_row["tie"],
        "both wrong": tally_row["both wrong"],
    }


def verdict(pref: dict, name: str, other: str) -> str:
    """One sentence on a preference(): told apart, or not (the interval holds 50 %)."""
    if not pref["decided"]:
        return f"no decided blind choices between {name} and {other} yet: nothing to tell"
    lo, hi = pref["ci"]
    share = f"{name} preferred in {pref['share']:.0%} of {pref['decided']} decided choices"
    share += f" (95 % {lo:.0%}-{hi:.0%})"
    if lo > 0.5:
        return share + f": people can tell, and prefer {name}"
    if hi < 0.5:
        return share + f": people can tell, and prefer {other}"
    return share + ": the interval holds 50 %, so these choices cannot tell the two files apart"

"""Agreement between raters, and between people and the automatic scores.

Cohen's kappa for two raters, Krippendorff's alpha for any number (and missing ratings), on
the shared ratings file: a rating's item is one answer, known by its run (research.engine.provenance;
the model for ratings older than run keys) and its question id (or question text).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import permutations

CORRECT = {"correct": 1, "partly correct": 1, "wrong": 0, "hallucinated": 0, "refused": 0}


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa of two raters' labels on the same items: `cohen_kappa([1,1,0,0],[1,0,0,0])` -> 0.5."""
    if len(a) != len(b) or not a:
        raise ValueError("two equally long, non-empty lists of labels are needed")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca.keys() | cb.keys()) / (n * n)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(units: dict, level: str = "nominal") -> float:
    """Krippendorff's alpha; `units` maps an item to its list of ratings (any number, any raters).

    `level` is "nominal" (labels) or "interval" (1-5 scores). Items with fewer than two
    ratings carry no information and are left out.
    """
    units = {u: [v for v in vs if v is not None] for u, vs in units.items()}
    units = {u: vs for u, vs in units.items() if len(vs) >= 2}
    if not units:
        raise ValueError("no item has two ratings")

    def delta(x, y) -> float:
        return float(x != y) if level == "nominal" else (float(x) - float(y)) ** 2

    coincidence: dict[tuple, float] = defaultdict(float)
    for vs in units.values():
        for i, j in permutations(range(len(vs)), 2):
            coincidence[(vs[i], vs[j])] += 1 / (len(vs) - 1)
    totals: dict = defaultdict(float)
    for (c, _), w in coincidence.items():
        totals[c] += w
    n = sum(totals.values())
    d_o = sum(w * delta(c, k) for (c, k), w in coincidence.items()) / n
    d_e = sum(totals[c] * totals[k] * delta(c, k) for c in totals for k in totals) / (n * (n - 1))
    return 1.0 if d_e == 0 else 1 - d_o / d_e


def item_key(record: dict) -> tuple:
    """The answer a rating is about: (run or answer id or model, question id or question)."""
    who = record.get("run") or record.get("answer_id") or record.get("model")
    return (who, record.get("question_id") or record.get("question"))


def rater_agreement(ratings: list[dict], field: str = "verdict") -> dict:
    """Agreement of raters on `field` ("verdict", "score" or "thumbs") over the items they share."""
    by_item: dict[tuple, dict] = defaultdict(dict)
    for r in ratings:
        if r.get(field) is not None:
            by_item[item_key(r)][r.get("rater") or "anonymous"] = r[field]
    raters = sorted({who for votes in by_item.values() for who in votes})
    level = "interval" if field == "score" else "nominal"
    out: dict = {"field": field, "raters": raters, "items": sum(len(v) >= 2 for v in by_item.values())}
    try:
        out["krippendorff_alpha"] = krippendorff_alpha(
            {k: list(v.values()) for k, v in by_item.items()}, level
        )
    except ValueError:
        out["krippendorff_alpha"] = None
    if len(raters) == 2:
        shared = [v for v in by_item.values() if len(v) == 2]
        a, b = [v[raters[0]] for v in shared], [v[raters[1]] for v in shared]
        out["cohen_kappa"] = cohen_kappa(a, b) if shared else None
    return out


def human_vs_automatic(ratings: list[dict], records: list[dict]) -> dict:
    """How often a person's verdict (correct or not) agrees with the automatic 'contains' score."""
    auto = {
        (r.get("run") or r.get("model"), r["id"]): int(r["scores"]["contains"])
        for r in records
        if r.get("scores")
    }
    pairs = [
        (CORRECT[r["verdict"]], auto[item_key(r)])
        for r in ratings
        if r.get("verdict") in CORRECT and item_key(r) in auto
    ]
    if not pairs:
        return {"n": 0, "agreement": None, "cohen_kappa": None}
    human, machine = zip(*pairs, strict=True)
    return {
        "n": len(pairs),
        "agreement": sum(h == m for h, m in pairs) / len(pairs),
        "cohen_kappa": cohen_kappa(list(human), list(machine)),
    }

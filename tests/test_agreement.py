"""Agreement statistics against textbook values."""

import pytest

from research.ratings.agreement import cohen_kappa, human_vs_automatic, krippendorff_alpha, rater_agreement


def test_cohen_kappa_textbook():
    # Wikipedia's example: 20 yes/yes, 15 no/no, 5 and 10 disagreements -> kappa 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)


def test_krippendorff_alpha_textbook():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example with
    # 4 observers, 12 units and missing values: alpha = 0.743.
    data = [
        [1, 1, None, 1],
        [2, 2, 3, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
        [2, 2, 2, 2],
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        [1, 1, 2, 1],
        [2, 2, 2, 2],
        [None, 5, 5, 5],
        [None, None, 1, 1],
        [None, None, 3, None],
    ]
    assert krippendorff_alpha(dict(enumerate(data))) == pytest.approx(0.743, abs=1e-3)
    assert krippendorff_alpha({1: [1, 1], 2: [2, 2]}) == 1.0


def rating(q, rater, verdict, score=None, model="m"):
    return {
        "question_id": q,
        "question": q,
        "model": model,
        "rater": rater,
        "verdict": verdict,
        "score": score,
    }


def test_rater_agreement_and_human_vs_automatic():
    ratings = [
        rating("q1", "ann", "correct", 5),
        rating("q1", "bob", "correct", 4),
        rating("q2", "ann", "wrong", 1),
        rating("q2", "bob", "hallucinated", 1),
        rating("q3", "ann", "wrong", 2),
        rating("q3", "bob", "wrong", 2),
    ]
    out = rater_agreement(ratings)
    assert out["raters"] == ["ann", "bob"] and out["items"] == 3 and out["cohen_kappa"] is not None
    assert rater_agreement(ratings, "score")["krippendorff_alpha"] > 0.8
    records = [
        {"id": "q1", "model": "m", "scores": {"contains": 1.0}},
        {"id": "q2", "model": "m", "scores": {"contains": 0.0}},
        {"id": "q3", "model": "m", "scores": {"contains": 1.0}},
    ]
    hv = human_vs_automatic([r for r in ratings if r["rater"] == "ann"], records)
    assert hv["n"] == 3 and hv["agreement"] == pytest.approx(2 / 3)

"""Two runs compared answer by answer, and people's blind choices tallied (research.evaluation.pairs)."""

from research.evaluation import pairs


def _rec(i, answer, right):
    return {"id": i, "answer": answer, "scores": {"contains": right}}


def test_paired_outcomes_count_each_common_question_once():
    a = [_rec(1, "Paris", True), _rec(2, "Rome", True), _rec(3, "no idea", False), _rec(4, "x", False)]
    b = [_rec(1, "Paris ", True), _rec(2, "Milan", False), _rec(3, "Bern", True), {"id": 4, "answer": ""}]
    out = pairs.compare(a, b)
    # Question 4 has no scores in B (not answered): left out.
    assert out == {"n": 3, "identical": 1, "both_right": 1, "only_a": 1, "only_b": 1, "both_wrong": 0}


def test_preference_counts_decided_choices_only():
    row = {"wins": {"a": 6, "b": 4}, "tie": 1, "both wrong": 2, "n": 13}
    pref = pairs.preference(row, "a")
    assert pref["decided"] == 10 and pref["share"] == 0.6
    lo, hi = pref["ci"]
    assert lo < 0.5 < hi
    assert "cannot tell the two files apart" in pairs.verdict(pref, "a", "b")


def test_a_clear_preference_is_told_apart_either_way():
    row = {"wins": {"a": 28, "b": 2}, "tie": 0, "both wrong": 0, "n": 30}
    assert "prefer a" in pairs.verdict(pairs.preference(row, "a"), "a", "b")
    assert "prefer a" in pairs.verdict(pairs.preference(row, "b"), "b", "a")


def test_no_choices_yet_says_so():
    pref = pairs.preference(None, "a")
    assert pref["decided"] == 0
    assert pairs.verdict(pref, "a", "b").startswith("no decided blind choices")


def test_the_sign_test_counts_only_the_questions_that_differ():
    assert pairs.sign_test({"only_a": 0, "only_b": 5}) == 2 / 2**5  # 0-5 or 5-0 of five
    assert pairs.sign_test({"only_a": 1, "only_b": 1}) == 1.0
    assert pairs.sign_test({"only_a": 0, "only_b": 0}) == 1.0
    assert pairs.sign_test({"only_a": 2, "only_b": 8}) == (1 + 10 + 45) * 2 / 2**10


def test_a_paired_verdict_answers_from_the_numbers():
    same = {"n": 15, "identical": 3, "both_right": 9, "only_a": 2, "only_b": 1, "both_wrong": 3}
    text = pairs.paired_verdict(same, "A", "B", "contain a reference")
    assert "9 contain a reference with both, 2 only with A, 1 only with B" in text
    assert "+7% for A" in text and text.endswith("no difference these questions can show")
    apart = dict(same, only_a=0, only_b=6, both_right=6)
    assert pairs.paired_verdict(apart, "A", "B", "contain a reference").endswith(
        "more contain a reference with B, beyond chance"
    )
    a = [{"id": 1, "answer": "x", "scores": {"contains": False, "hallucinated": True}}]
    b = [{"id": 1, "answer": "y", "scores": {"contains": False, "hallucinated": False}}]
    assert pairs.compare(a, b, key="hallucinated")["only_a"] == 1

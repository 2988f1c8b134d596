"""The choice never picks the reference or an upcast, and carries the projection's error."""

import pytest

from research.selection import pareto as selection
from research.selection import projection


def _row(t, mem, tps, kld, **kw):
    return {"type": t, "memory_mb": mem, "tg_tps": tps, "kld_mean": kld, **kw}


ROWS = [
    _row("F16", 300, 20, 0.0, reference=True, upcast=True),
    _row("Q8_0", 200, 30, 0.001, upcast=True),
    _row("Q4_1", 150, 40, 0.01),
    _row("Q4_0", 140, 6, 0.05),
]


def test_the_reference_and_upcasts_are_never_chosen_whatever_their_figures():
    choice = selection.recommend(ROWS, 1000, 5.0)
    assert choice.row["type"] == "Q4_1"
    assert "2 reference or upcast rows not eligible" in choice.reason
    assert [r["type"] for r in selection.eligible(ROWS)] == ["Q4_1", "Q4_0"]


def test_the_quality_column_is_named_as_the_caller_says():
    choice = selection.recommend(ROWS, 1000, 5.0, quality_label="ΔPPL (proxy)")
    assert "ΔPPL (proxy) 0.0100" in choice.reason and "KL" not in choice.reason


def test_nothing_eligible_says_so():
    choice = selection.recommend(ROWS[:2], 1000, 5.0)
    assert choice.row is None and "no eligible row" in choice.reason


def test_over_budget_says_by_how_much():
    choice = selection.recommend(ROWS, 100, 5.0)
    assert choice.row is None and "Q4_0, needs 140 MB (40 MB, 40%, over)" in choice.reason


def test_the_choice_at_plus_and_minus_the_median_error():
    rows = [_row("Q4_1", 150, 5.4, 0.01), _row("Q4_0", 140, 9.0, 0.05)]
    out = selection.sensitivity(rows, 1000, 0.22, min_tps=5.3)
    assert out["as projected"].row["type"] == "Q4_1"
    assert out["slower"].row["type"] == "Q4_0"  # 5.4 / 1.22 = 4.4 is below reading speed
    assert out["faster"].row["type"] == "Q4_1"


def test_the_band_is_what_a_projection_s_error_allows():
    assert projection.band(5.41, 0.22) == pytest.approx((4.434, 6.936), abs=1e-3)
    assert projection.band(5.0, 1.0)[1] == float("inf")


def test_the_leave_one_out_error_summarises_the_published_check():
    rows = [{"error": 0.1}, {"error": -0.3}, {"error": 0.2}]
    assert projection.loo_error(rows) == {"median": 0.2, "max": 0.3, "n": 3}
    real = projection.loo_error()
    assert real["n"] >= 5 and 0 < real["median"] <= real["max"]

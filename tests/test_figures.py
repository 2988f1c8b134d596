"""The notebooks' figures draw what their captions say (research.paper.figures), read back from the axes."""

import pytest

from research.paper import figures
from research.selection import projection


def test_the_orca_speed_figure_carries_both_error_bands_and_the_threshold():
    rows = [
        {"type": "Q4_0", "bits_per_weight": 4.62, "phone_tps": 6.54},
        {"type": "Q5_0", "bits_per_weight": 5.59, "phone_tps": 5.41},
    ]
    error = {"median": 0.22, "max": 0.57, "n": 9}
    ax = figures.orca_speed(rows, error, 5.3, {"Q5_0": 1.7}, "recorded 2026-11-30 on AMD EPYC").axes[0]
    median = next(c for c in ax.collections if "median" in c.get_label())
    (_, q5_segment) = median.get_segments()
    lo, hi = projection.band(5.41, 0.22)
    assert q5_segment[0][1] == pytest.approx(lo) and q5_segment[1][1] == pytest.approx(hi)
    threshold = next(line for line in ax.get_lines() if "reading speed" in line.get_label())
    assert threshold.get_ydata()[0] == 5.3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "recorded 2026-11-30 on AMD EPYC (a PC, not a phone)" in labels


def test_the_pareto_figure_never_offers_the_reference_as_a_choice():
    rows = [
        {"type": "F16", "memory_mb": 300, "tg_tps": 20, "kld_mean": 0.0, "reference": True, "upcast": True},
        {"type": "Q4_0", "memory_mb": 140, "tg_tps": 30, "kld_mean": 0.05},
    ]
    ax = figures.pareto_front(rows, rows[1:]).axes[0]
    assert {t.get_text() for t in ax.texts} == {"F16", "Q4_0"}
    by_label = {c.get_label(): c.get_offsets()[:, 0].tolist() for c in ax.collections}
    assert by_label["not eligible (reference, upcast)"] == [300]
    assert by_label["Pareto front (eligible rows)"] == [140]


def test_topic_intervals_draw_each_topic_s_wilson_interval():
    per_topic = {
        "history": {"n": 3, "contains": 2 / 3, "contains_ci": (0.21, 0.94)},
        "politics": {"n": 3, "contains": 0.0, "contains_ci": (0.0, 0.56)},
    }
    summary = {"paper": {"n": 6, "contains": 1 / 3, "per_topic": per_topic}}
    ax = figures.topic_intervals(summary).axes[0]
    (container,) = ax.containers
    bars = container.lines[2][0].get_segments()
    assert [tuple(round(y, 2) for _, y in seg) for seg in bars] == [(0.21, 0.94), (0.0, 0.56)]


def test_ab_outcomes_count_every_kind_of_pair():
    stats = {"n": 10, "identical": 4, "both_right": 5, "only_a": 2, "only_b": 1, "both_wrong": 2}
    ax = figures.ab_outcomes(stats, ("Q4_1", "Q4_0")).axes[0]
    assert [p.get_height() for p in ax.patches] == [4, 5, 2, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()][2:4] == ["only Q4_1", "only Q4_0"]

"""Phone projection and the choice of a quantization: data checks and the rules' logic."""

import pytest

from research.models.catalog import resolve
from research.models.gguf import read_gguf
from research.selection import pareto as selection
from research.selection import projection


def test_every_published_figure_names_a_known_device_and_a_source():
    data = projection.devices()
    assert "galaxy-s21" in data["devices"] and data["devices"]["galaxy-s21"]["bandwidth_gbs"] == 51.2
    assert len(data["measurements"]) >= 5
    for m in data["measurements"]:
        assert m["device"] in data["devices"] and m["source"] and m["tg_tps"] > 0
        shape = projection.shape_of_published(m)
        assert 1e8 < shape.weight_bytes < 5e9  # 135M-4B parameter phones' models


def test_the_roofline_is_bandwidth_over_bytes_per_token():
    shape = projection.Shape("m", "Q4_0", 1_900_000_000, 0, 1_900_000_000)
    assert projection.roofline_tps(51.2, shape) == pytest.approx(26.9, abs=0.1)


def test_published_figures_are_predicted_from_the_others():
    rows = projection.published_check()
    for r in rows:
        assert 0 < r["efficiency"] < 1  # nobody beats the roofline
        assert r["error"] == pytest.approx(r["projected_tps"] / r["measured_tps"] - 1)
    # Leave-one-out: the projection for a row does not use that row's own efficiency.
    assert len({round(r["projected_tps"] / r["roofline_tps"], 6) for r in rows}) > 1
    assert "median absolute error" in projection.format_check(rows)


@pytest.mark.model
def test_the_bundled_model_projects_faster_than_the_papers_on_the_s21():
    small = projection.project(projection.shape_of(read_gguf(resolve(None).path)))
    orca = projection.shape_of_published(
        next(m for m in projection.devices()["measurements"] if m["model"].startswith("orca-mini"))
    )
    big = projection.project(orca)
    assert small["projected_tps"] > 5 * big["projected_tps"] > 0


ROWS = [
    {"type": "F16", "memory_mb": 430, "tg_tps": 60.0, "kld_mean": 0.0},
    {"type": "Q8_0", "memory_mb": 310, "tg_tps": 90.0, "kld_mean": 0.001},
    {"type": "Q4_0", "memory_mb": 320, "tg_tps": 95.0, "kld_mean": 0.05},  # bigger and worse than Q8_0
    {"type": "Q2_K", "memory_mb": 300, "tg_tps": 4.0, "kld_mean": 0.2},
]


def test_pareto_front_drops_dominated_rows():
    front = [r["type"] for r in selection.pareto(ROWS)]
    assert "Q8_0" in front and "F16" in front and "Q2_K" in front
    assert "Q4_0" in front  # fastest, so not dominated
    slower_q4 = dict(ROWS[2], tg_tps=80.0)
    assert slower_q4 not in selection.pareto([*ROWS[:2], slower_q4])


def test_recommendation_respects_budget_and_reading_speed():
    assert selection.recommend(ROWS, budget_mb=500).row["type"] == "F16"
    choice = selection.recommend(ROWS, budget_mb=315)
    assert choice.row["type"] == "Q8_0" and "315 MB" in choice.reason and "KL divergence" in choice.reason
    too_slow = selection.recommend(ROWS, budget_mb=305)
    assert too_slow.row is None and "5.3 tokens/s" in too_slow.reason and "Q2_K" in too_slow.reason
    too_big = selection.recommend(ROWS, budget_mb=100)
    assert too_big.row is None and "none fits 100 MB" in too_big.reason


def test_orca_mini_table_from_published_sizes():
    from research.selection import table as report

    rows = {r["type"]: r for r in report.orca_rows("galaxy-s21", 2048)}
    assert set(rows) == {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
    assert 5.5 < rows["Q5_0"]["bits_per_weight"] < 5.7  # the paper's "about 5.6 bits per weight"
    # ARM with dotprod repacks Q4_0 and Q8_0, not Q4_1/Q5_x: the engine reads those files in, so
    # the copy never counts twice (mapped, a Q4_0 file would need its 1.9 GB twice).
    for t, r in rows.items():
        assert (r["phone_load"] == "read") == (t in ("Q4_0", "Q8_0")), t
        assert r["phone_memory_mb"] - r["size_mb"] < 1000, t  # KV cache 680 MB + working memory
        assert r["phone_memory_mb"] - r["phone_memory_answering_mb"] < 50, t  # one staged tensor
    speeds = [rows[t]["phone_tps"] for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")]
    assert speeds == sorted(speeds, reverse=True)  # bigger files decode slower

"""The paper's claims and the rules that turn the kit's numbers into verdicts (research.paper.claims)."""

import pytest

from research.errors import KitError
from research.paper import claims as paper


def test_the_nine_claims_each_belong_to_a_notebook_of_the_paper_s_steps():
    assert len(paper.CLAIMS) == 9
    assert {c.notebook for c in paper.CLAIMS.values()} == {"01", "02", "03"}


def test_a_finding_with_an_unknown_claim_or_verdict_is_refused():
    with pytest.raises(KitError, match="unknown claim"):
        paper.Finding("fast", "x", "nb", "none", "reproduced")
    with pytest.raises(KitError, match="unknown verdict"):
        paper.Finding("ram", "x", "nb", "none", "a match")


def test_the_size_line_is_llama_cpp_s_for_orca_mini_3b_q5_0():
    # llama.cpp prints "file size = 2.23 GiB (5.59 BPW)" loading orca-mini-3b.q5_0.gguf.
    assert paper.size_line(2395435328, 3426473600) == "file size = 2.23 GiB (5.59 BPW)"


def test_bits_per_weight_is_reproduced_only_near_5_6():
    others = {"Q4_0": 4.51, "Q8_0": 8.5}
    assert paper.bits_finding(5.59, None, others, "nb").verdict == "reproduced"
    assert paper.bits_finding(5.59, 5.59, others, "nb").verdict == "reproduced"
    assert paper.bits_finding(4.51, None, others, "nb").verdict == "contradicted"
    # A measured figure takes precedence over the published one.
    assert paper.bits_finding(5.59, 4.9, others, "nb").verdict == "contradicted"


def test_ram_is_consistent_only_when_a_peak_lies_within_the_paper_s_figure():
    ok = paper.ram_finding({512: 2300.0, 2048: 3100.0}, {512: 2640.0, 2048: 3150.0}, 2284.0, "nb")
    assert ok.verdict == "consistent within error" and "512" in ok.why
    assert "measured here" in ok.kit and "predicted for the phone" in ok.kit
    assert "not checked on this shape" in ok.band
    errs = [-0.027, 0.004, -0.023]
    with_errors = paper.ram_finding({512: 2300.0}, {512: 2640.0}, 2284.0, "nb", errs)
    assert "within 2.7% of the 3 peaks" in with_errors.band
    over = paper.ram_finding({}, {512: 2640.0, 2048: 3150.0}, 2284.0, "nb")
    assert over.verdict == "contradicted"
    assert "2.2 GB is the file" in over.why and "predicted for the phone" in over.kit


def test_speed_inside_its_error_band_is_not_decided_and_outside_it_is():
    error = {"median": 0.22, "max": 0.57, "n": 9}
    # The case: 5.4 t/s projected against 5.3 with a 22 % median error.
    close = paper.speed_finding(5.41, 5.3, error, "nb")
    assert close.verdict == "not decided"
    assert "4.4-6.9" in close.band and "+2%" in close.kit
    assert paper.speed_finding(10.0, 5.3, error, "nb").verdict == "consistent within error"  # 8.2 >= 5.3
    assert paper.speed_finding(3.0, 5.3, error, "nb").verdict == "contradicted"  # 3.85 < 5.3
    here = paper.speed_finding(5.41, 5.3, error, "nb", measured_here=1.7)
    assert "measured here 1.7" in here.kit


def _summary(contains, ci, hallucinated, hci, n=30):
    return {
        "n": n,
        "contains": contains,
        "contains_ci": ci,
        "hallucinated": hallucinated,
        "hallucinated_ci": hci,
    }


def test_answers_are_not_testable_on_another_model_and_judged_by_intervals_on_orca_mini():
    s = _summary(0.4, (0.25, 0.58), 0.5, (0.33, 0.67))
    other = paper.answers_findings(s, False, "SmolLM2", "nb")
    assert [f.verdict for f in other] == ["not testable here"] * 2
    assert "SmolLM2: 40% of 30" in other[0].kit
    good = paper.answers_findings(_summary(0.8, (0.62, 0.9), 0.1, (0.03, 0.26)), True, "orca", "nb")
    assert [f.verdict for f in good] == ["reproduced", "reproduced"]
    bad = paper.answers_findings(_summary(0.2, (0.1, 0.38), 0.0, (0.0, 0.0)), True, "orca", "nb")
    assert [f.verdict for f in bad] == ["contradicted", "contradicted"]
    unsure = paper.answers_findings(s, True, "orca", "nb")
    assert [f.verdict for f in unsure] == ["consistent within error"] * 2


def test_findings_are_saved_per_notebook_and_tabled_in_the_paper_s_order(tmp_path):
    a = paper.Finding("prompt-format", "same", "nb 03", "exact", "reproduced")
    b = paper.Finding("termux-build", "built | here", "nb 01", "none", "not testable here", "no phone")
    paper.save([a], "03", tmp_path)
    paper.save([b], "01", tmp_path)
    loaded = paper.load(tmp_path)
    assert [f.claim for f in loaded] == ["termux-build", "prompt-format"]
    assert loaded[1] == a
    lines = paper.table(loaded).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| termux-build |")
    assert "built / here" in lines[2]  # a pipe inside a cell would break the table
    assert "**not testable here** (no phone)" in lines[2]


def test_orca_params_is_the_count_of_its_shape():
    from research.paper import shaped

    assert paper.ORCA_PARAMS == shaped.n_params(**shaped.ORCA_MINI_3B)

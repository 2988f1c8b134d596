"""Calibration's statistics against textbook or hand-worked values, each with more than one bin,
class or fold: the arithmetic is written beside each expectation, never taken from the module.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from research.confidence import calibration as cal
from research.confidence.transfer import fitted_line
from research.confidence.transfer import of_signals as shown_of
from research.confidence.transfer import of_stats as stats_of
from research.errors import KitError


def test_auroc():
    # scikit-learn's roc_auc_score example: 3 of the 4 (right, wrong) pairs ordered correctly.
    assert cal.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert cal.auroc([0.9, 0.2, 0.6], [1, 0, 0]) == 1.0
    assert cal.auroc([0.2, 0.9], [1, 0]) == 0.0
    assert cal.auroc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5  # ties count half
    # (0.7 vs 0.7: half) + (0.7 vs 0.1: 1) + (0.9 vs 0.7: 1) + (0.9 vs 0.1: 1) = 3.5 of 4
    assert cal.auroc([0.7, 0.9, 0.7, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert math.isnan(cal.auroc([0.1, 0.2], [1, 1])) and math.isnan(cal.auroc([0.1, 0.2], [0, 0]))


def test_risk_coverage():
    coverage, accuracy = cal.risk_coverage([0.9, 0.1, 0.5], [1, 0, 0])
    assert coverage.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert accuracy.tolist() == pytest.approx([1.0, 0.5, 1 / 3])  # kept: 0.9; then 0.5; then 0.1
    _, accuracy = cal.risk_coverage([0.5, 0.5, 0.2], [0, 1, 1])  # a tie keeps the earlier answer first
    assert accuracy.tolist() == pytest.approx([0.0, 0.5, 2 / 3])


def test_accuracy_at():
    scores, labels = [0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0]
    assert cal.accuracy_at(scores, labels, 0.5) == 0.5  # the top two: right, wrong
    assert cal.accuracy_at(scores, labels, 0.8) == pytest.approx(2 / 3)  # round(3.2) = 3 kept
    assert cal.accuracy_at(scores, labels, 0.1) == 1.0  # round(0.4) = 0, but one is kept at least
    assert cal.accuracy_at(scores, labels, 1.0) == 0.5
    assert cal.accuracy_at([0.5, 0.5], [0, 1], 0.5) == 0.0  # a tie: the earlier answer
    assert math.isnan(cal.accuracy_at([], [], 0.5))


def test_ece_weighs_the_absolute_gap_of_each_bin():
    # Bin 1 (0.1-0.2): two answers at 0.15, both right: |1 - 0.15| = 0.85. Bin 8: two at 0.85,
    # both wrong: |0 - 0.85| = 0.85. ECE = 0.5 * 0.85 + 0.5 * 0.85 = 0.85; signed gaps would cancel.
    assert cal.ece([0.15, 0.15, 0.85, 0.85], [1, 1, 0, 0]) == pytest.approx(0.85)
    # Guo et al.'s definition, with unequal bins: 0.9 (right) in bin 9, 0.8 (wrong) in bin 8,
    # 0.3 (right) in bin 3, 0.2 (wrong) in bin 2: (0.1 + 0.8 + 0.7 + 0.2) / 4 = 0.45.
    assert cal.ece([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0]) == pytest.approx(0.45)
    # Within one bin the gaps do cancel: [0.8, 0.8] with one right: |1 - 1.6| / 2 = 0.3.
    assert cal.ece([0.8, 0.8], [1, 0]) == pytest.approx(0.3)
    # A probability of 1.0 belongs to the last bin (0.9-1.0], with 0.95: |1 - 1.95| / 2.
    assert cal.ece([1.0, 0.95], [0, 1]) == pytest.approx(0.475)
    # Two bins instead of ten: [0.2, 0.4] in bin 0 (one right: |1 - 0.6|), [0.6, 0.9] in bin 1
    # (one right: |1 - 1.5|): (0.4 + 0.5) / 4.
    assert cal.ece([0.2, 0.4, 0.6, 0.9], [1, 0, 0, 1], bins=2) == pytest.approx(0.225)
    assert math.isnan(cal.ece([], []))


def test_reliability():
    points = cal.reliability([0.15, 0.15, 0.85, 1.0, 0.95], [1, 0, 0, 1, 1])
    assert points == [
        {"bin": 1, "confidence": pytest.approx(0.15), "accuracy": 0.5, "n": 2},
        {"bin": 8, "confidence": pytest.approx(0.85), "accuracy": 0.0, "n": 1},
        {"bin": 9, "confidence": pytest.approx(0.975), "accuracy": 1.0, "n": 2},
    ]
    assert cal.reliability([0.2, 0.9], [1, 0], bins=2) == [
        {"bin": 0, "confidence": pytest.approx(0.2), "accuracy": 1.0, "n": 1},
        {"bin": 1, "confidence": pytest.approx(0.9), "accuracy": 0.0, "n": 1},
    ]


def test_logistic_fit_of_a_binary_signal_is_the_two_groups_rates():
    """Unpenalized, a logistic model of one binary feature predicts each group's own rate (the
    saturated model's maximum likelihood): x = 0 right 1 of 4 times, x = 1 right 3 of 4 times.
    Standardized, x is -1 or +1: logit(0.75) = ln 3 = w + b and logit(0.25) = -ln 3 = -w + b."""
    X = [[0], [0], [0], [0], [1], [1], [1], [1]]
    y = [0, 0, 0, 1, 0, 1, 1, 1]
    model = cal.Logistic(("x",)).fit(X, y, l2=0.0)
    assert model.predict([[0], [1]]).tolist() == pytest.approx([0.25, 0.75], abs=1e-6)
    assert model.mean == [0.5] and model.scale == [0.5]
    assert model.weights == [pytest.approx(math.log(3), abs=1e-6)] and model.bias == pytest.approx(
        0, abs=1e-6
    )


def test_the_intercept_is_not_shrunk():
    """With a penalty that flattens every weight, what is left is the base rate: 3 right of 4
    predicts 0.75 for every answer (a shrunk intercept would pull it to 0.5)."""
    X = [[0.0, 1.0], [1.0, 5.0], [2.0, 2.0], [3.0, 7.0]]
    model = cal.Logistic(("a", "b")).fit(X, [1, 1, 0, 1], l2=1e9)
    assert model.predict(X).tolist() == pytest.approx([0.75] * 4, abs=1e-4)
    assert model.bias == pytest.approx(math.log(3), abs=1e-4)


def test_a_constant_signal_neither_divides_by_zero_nor_moves_the_fit():
    model = cal.Logistic(("x", "c")).fit([[0, 7], [0, 7], [1, 7], [1, 7]], [0, 1, 1, 1], l2=0.0)
    assert model.scale == [0.5, 1.0] and model.mean == [0.5, 7.0]
    assert model.predict([[1, 7]]) == pytest.approx([1.0], abs=1e-3)  # x = 1 was always right
    assert model.predict([[0, 7]]) == pytest.approx([0.5], abs=1e-6)
    assert model.weights[1] == 0.0


def test_a_strong_penalty_shrinks_the_weights_toward_zero():
    X, y = [[0], [0], [0], [0], [1], [1], [1], [1]], [0, 0, 0, 1, 0, 1, 1, 1]
    weak = cal.Logistic(("x",)).fit(X, y, l2=0.0).weights[0]
    default = cal.Logistic(("x",)).fit(X, y).weights[0]  # L2 = 10 over 8 answers
    strong = cal.Logistic(("x",)).fit(X, y, l2=1000.0).weights[0]
    assert weak > default > strong > 0 and strong < 0.01


def test_folds_are_stratified():
    labels = [1] * 10 + [0] * 15
    fold = cal.folds(labels, k=5, seed=3)
    for f in range(5):
        members = [y for y, g in zip(labels, fold, strict=True) if g == f]
        assert sorted(members) == [0, 0, 0, 1, 1], f  # 2 of the 10 right, 3 of the 15 wrong
    assert cal.folds(labels, k=5, seed=3).tolist() == fold.tolist()  # reproducible
    assert cal.folds(labels, k=5, seed=4).tolist() != fold.tolist()  # and shuffled by the seed
    assert sorted(set(cal.folds([1, 0, 1, 0, 1, 0], k=3).tolist())) == [0, 1, 2]


def test_out_of_fold_predictions_never_see_their_own_answer():
    """Signals of pure noise: a model that saw the answers ranks them well (it memorizes), one that
    did not is at chance."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(100, 30)), rng.integers(0, 2, 100)
    in_sample = cal.Logistic(()).fit(X, y, l2=0.0).predict(X)
    held_out = cal.out_of_fold(X, y, l2=0.0)
    assert cal.auroc(in_sample, y) > 0.7
    assert cal.auroc(held_out, y) < 0.6
    assert held_out.shape == (100,) and np.all((held_out > 0) & (held_out < 1))


def test_out_of_fold_with_a_constant_signal_is_each_fold_complements_base_rate():
    """Nothing to learn: each answer gets the rate of right answers among the other folds. 3 right
    and 3 wrong in 3 stratified folds: every fold holds one of each, the others 2 of 4."""
    p = cal.out_of_fold([[0.0]] * 6, [1, 0, 1, 0, 1, 0], k=3)
    assert p.tolist() == pytest.approx([0.5] * 6, abs=1e-6)
    # 4 right, 2 wrong, 2 folds: each fold 2 right 1 wrong, so the other fold says 2/3.
    p = cal.out_of_fold([[0.0]] * 6, [1, 1, 1, 1, 0, 0], k=2)
    assert p.tolist() == pytest.approx([2 / 3] * 6, abs=1e-6)


def test_measures():
    got = cal.measures([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0])
    assert got == {
        "n": 4,
        "accuracy": 0.5,
        "auroc": pytest.approx(0.75),  # (0.9 > 0.8, 0.9 > 0.2, 0.3 > 0.2) of 4 pairs
        "acc@50": 0.5,
        "acc@80": pytest.approx(2 / 3),
        "ece": pytest.approx(0.45),
        "brier": pytest.approx((0.01 + 0.64 + 0.49 + 0.04) / 4),
    }
    ranked = cal.measures([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0], scores=[0.1, 0.2, 0.3, 0.4])
    assert (
        ranked["auroc"] == pytest.approx(0.25)
        and ranked["acc@50"] == 0.5
        and ranked["ece"] == pytest.approx(0.45)
    )
    assert ranked["acc@80"] == pytest.approx(1 / 3)  # kept 0.2, 0.3, 0.8: one right


def test_intervals_by_hand():
    """Two answers at 0.5, one right. A resample of two holds both (half the draws: accuracy 0.5,
    ECE 0), or one twice (accuracy 0 or 1, ECE 0.5). Accuracy's 95 % interval: (0, 1). ECE's:
    percentiles (0, 0.5), shifted down by the resamples' mean ECE (0.25) minus the point's (0),
    kept at 0 or above: (0, 0.25)."""
    got = cal.with_intervals([0.5, 0.5], [1, 0], n=1000)
    assert got["accuracy_ci"] == (0.0, 1.0)
    assert got["ece"] == 0.0
    lo, hi = got["ece_ci"]
    assert lo == 0.0 and hi == pytest.approx(0.25, abs=0.03)
    assert set(got) == {"n", "accuracy", "auroc", "acc@50", "acc@80", "ece", "brier"} | {
        f"{k}_ci" for k in ("accuracy", "auroc", "acc@50", "acc@80", "ece", "brier")
    }


def test_an_interval_of_what_no_resample_can_measure_is_nan():
    got = cal.with_intervals([0.9, 0.8, 0.7], [1, 1, 1], n=50)  # one class: no AUROC
    assert math.isnan(got["auroc"]) and all(math.isnan(v) for v in got["auroc_ci"])
    assert got["accuracy_ci"] == (1.0, 1.0)


def test_intervals_are_reproducible_and_hold_the_point():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=80)
    y = (rng.uniform(size=80) < p).astype(int)
    a, b = cal.with_intervals(p, y, n=200, seed=5), cal.with_intervals(p, y, n=200, seed=5)
    assert a == b
    for k in ("accuracy", "auroc", "acc@50", "acc@80"):
        lo, hi = a[k + "_ci"]
        assert lo <= a[k] <= hi, k
    assert cal.with_intervals(p, y, n=200, seed=6)["auroc_ci"] != a["auroc_ci"]


def labelled(n_right: int, n_wrong: int):
    X = [[float(i % 3)] for i in range(n_right + n_wrong)]
    return X, [1] * n_right + [0] * n_wrong


@pytest.mark.parametrize("right, wrong", [(9, 0), (9, 1), (1, 9), (0, 10), (4, 5)])
def test_fit_refuses_too_few_answers_or_a_single_kind(right, wrong):
    X, y = labelled(right, wrong)
    with pytest.raises(KitError) as e:
        cal.fit("free", ("x",), X, y, "ab" * 32, {"source": "eval"})
    assert str(e.value) == (
        f"too few labelled answers to calibrate ({right + wrong}, {right} right): "
        "at least 10 with two right and two wrong"
    )


def test_fit_at_the_smallest_set():
    X, y = labelled(8, 2)
    c = cal.fit("free", ("x",), X, y, "ab" * 32, {"source": "eval", "path": "r.jsonl"})
    assert c.fitted_on == {"source": "eval", "path": "r.jsonl", "n": 10, "right": 8}
    assert c.held_out["n"] == 10 and c.held_out["accuracy"] == 0.8
    assert c.method == "free" and c.model.names == ("x",) and c.model_sha256 == "ab" * 32
    assert c.created.endswith("+00:00") and "T" in c.created
    assert c.id.startswith("free@abababab:") and len(c.id) == len("free@abababab:") + 8
    X, y = labelled(2, 8)  # two right is enough as well
    assert cal.fit("free", ("x",), X, y, "ab" * 32, {}).fitted_on == {"n": 10, "right": 2}


def test_probability_needs_every_signal():
    model = cal.Logistic(("a", "b"), [0.0, 0.0], [1.0, 1.0], [1.0, -1.0], 0.0)
    c = cal.Calibration("m", "ab" * 32, model, {})
    assert c.probability({"a": 1.0, "b": 1.0}) == pytest.approx(0.5)
    assert c.probability({"a": 2.0, "b": 0.0}) == pytest.approx(1 / (1 + math.exp(-2)))
    assert c.probability({"a": 1.0}) is None
    assert c.probability({"a": 1.0, "b": float("nan")}) is None
    assert c.probability({"a": 1.0, "b": None}) is None
    assert c.probability({"a": 1, "b": 0}) == pytest.approx(1 / (1 + math.exp(-1)))


def test_a_calibration_comes_back_from_its_dict():
    model = cal.Logistic(("a",), [1.0], [2.0], [0.5], -0.25)
    c = cal.Calibration("m", "cd" * 32, model, {"n": 3}, {"auroc": 0.7}, "2026-01-01T00:00:00+00:00")
    d = c.as_dict()
    assert d["id"] == c.id and d["model"] == {
        "names": ("a",),
        "mean": [1.0],
        "scale": [2.0],
        "weights": [0.5],
        "bias": -0.25,
    }
    back = cal.Calibration.from_dict(d)
    assert back == c
    assert (
        cal.Calibration.from_dict({k: v for k, v in d.items() if k not in ("held_out", "created")}).created
        == ""
    )
    other = cal.Calibration("m", "cd" * 32, cal.Logistic(("a",), [1.0], [2.0], [0.6], -0.25), {})
    assert other.id != c.id and other.id.split(":")[0] == c.id.split(":")[0]


def test_the_constants_the_figures_name():
    """The paper's figures say 5 folds, 1000 resamples, 10 bins and 50 %/80 % coverage."""
    assert (cal.FOLDS, cal.BOOTSTRAP, cal.ECE_BINS, cal.COVERAGES, cal.L2) == (5, 1000, 10, (0.5, 0.8), 10.0)


# --- A calibration read from a file: checked before any answer uses it -----------------------------

SHA = "S" * 64


def saved(**model_changes) -> dict:
    model = {"names": ["mean_logprob"], "mean": [0.5], "scale": [2.0], "weights": [1.5], "bias": -0.5}
    return {"method": "free", "model_sha256": SHA, "model": model | model_changes, "fitted_on": {}}


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "not a calibration (no model object)"),
        ({"method": "free"}, "not a calibration (no model object)"),
        (saved() | {"model": [1]}, "not a calibration (no model object)"),
        (saved() | {"method": "p_true"}, "it is for method 'p_true', not 'free'"),
        (saved() | {"method": "x" * 50}, f"it is for method {'x' * 40!r}, not 'free'"),
        (saved() | {"model_sha256": "OTHER"}, "it is for another model file (its model_sha256 differs)"),
        (saved(names="mean_logprob"), "its signal names are not a list of distinct names"),
        (saved(names=[]), "its signal names are not a list of distinct names"),
        (saved(names=["mean_logprob", "mean_logprob"]), "its signal names are not a list of distinct names"),
        (saved(names=["mean_logprob"] * 65), "its signal names are not a list of distinct names"),
        (
            saved(names=["__class__", 3, "n_tokens", "a", "b"]),
            "it reads signals the kit does not know (__class__, 3, a)",
        ),
        (saved(mean=[0, 1]), "mean is not a list of 1 numbers"),
        (saved(mean="0"), "mean is not a list of 1 numbers"),
        (saved(mean=["0"]), "mean holds '0', not a finite number"),
        (saved(mean=[True]), "mean holds 'True', not a finite number"),
        (saved(weights=[math.nan]), "weights holds 'nan', not a finite number"),
        (saved(weights=[math.inf]), "weights holds 'inf', not a finite number"),
        (saved(scale=[0]), "scale holds '0', not a finite positive number"),
        (saved(scale=[-1.0]), "scale holds '-1.0', not a finite positive number"),
        (saved(bias=None), "bias holds 'None', not a finite number"),
        (saved(bias="1" * 30), f"bias holds {'1' * 20!r}, not a finite number"),
        (saved() | {"fitted_on": []}, "what it was fitted on is not recorded as an object"),
        (saved() | {"held_out": [1]}, "what it was fitted on is not recorded as an object"),
        (saved() | {"created": 5}, "its creation time is not a string"),
    ],
)
def test_validate_says_what_is_wrong(data, message):
    with pytest.raises(ValueError) as e:
        cal.validate(data, SHA, "free")
    assert str(e.value) == message


def test_validate_keeps_a_good_calibration_as_written():
    good = saved(names=["mean_logprob", "n_tokens"], mean=[0.5, 3], scale=[2.0, 1], weights=[1.5, -1], bias=2)
    c = cal.validate(good | {"held_out": {"auroc": 0.7}, "created": "t"}, SHA, "free")
    assert c.model == cal.Logistic(("mean_logprob", "n_tokens"), [0.5, 3.0], [2.0, 1.0], [1.5, -1.0], 2.0)
    assert (c.method, c.model_sha256, c.fitted_on, c.held_out, c.created) == (
        "free",
        SHA,
        {},
        {"auroc": 0.7},
        "t",
    )
    assert cal.validate(saved() | {"held_out": None}, SHA, "free").created == ""
    assert cal.validate(saved(names=["mean_logprob"] * 1), SHA, "free").model.names == ("mean_logprob",)
    sixty_four = [f"s{i}" for i in range(64)]  # the most a calibration may read, all unknown here
    with pytest.raises(ValueError, match="does not know"):
        cal.validate(saved(names=sixty_four), SHA, "free")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESEARCH_DATA_DIR", str(tmp_path / "kit"))
    cal._DAMAGED.clear()
    yield tmp_path
    cal._DAMAGED.clear()


def write(root, data) -> Path:
    path = root / "calibrations" / SHA / "free.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_load_prefers_the_persons_calibration_to_the_kits(home):
    assert cal.load(SHA, "free") is None
    write(home / "kit", saved(bias=1.0))
    assert cal.load(SHA, "free").model.bias == 1.0
    write(home / "home", saved(bias=2.0))
    assert cal.load(SHA, "free").model.bias == 2.0
    assert cal.shipped_dir() == home / "kit" / "calibrations"
    assert cal.folder(SHA) == home / "home" / "calibrations" / SHA


def test_a_damaged_file_is_named_once_and_costs_only_the_figure(home, capsys):
    path = write(home / "home", "{not json")
    write(home / "kit", saved())  # the kit's is not used instead of a damaged own one
    assert cal.load(SHA, "free") is None and cal.load(SHA, "free") is None
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and err.startswith(f"warning: {path} is damaged (")
    assert err.endswith(
        "); answers show no calibrated confidence until it is deleted "
        "(python -m research eval --calibrate makes a new one)\n"
    )
    assert cal.damaged(SHA, "free") == path
    shown = shown_of({"mean_logprob": 0.5}, SHA, "free", cal.EVAL)
    assert shown.p is None and shown.words == "not calibrated (its saved calibration is damaged)"
    path.write_text(json.dumps(saved()))  # mended: used again, no longer damaged
    assert cal.load(SHA, "free") is not None and cal.damaged(SHA, "free") is None


def test_a_file_too_large_or_too_deep_is_damaged(home, capsys):
    write(home / "home", " " * (4 * 2**20 + 1))
    assert cal.load(SHA, "free") is None and cal.damaged(SHA, "free") is not None
    cal._DAMAGED.clear()
    write(home / "home", "[" * 100_000)
    assert cal.load(SHA, "free") is None and cal.damaged(SHA, "free") is not None
    assert cal.MAX_FILE_MB == 4 and cal.MAX_FEATURES == 64


def test_the_confidence_shown_with_an_answer(home):
    write(home / "home", saved())  # p = sigmoid(1.5 * (x - 0.5) / 2 - 0.5)
    shown = shown_of({"mean_logprob": 0.5}, SHA, "free", cal.EVAL)
    assert shown.p == pytest.approx(1 / (1 + math.exp(0.5)))
    assert shown.method == "free" and shown.calibration == cal.load(SHA, "free").id
    assert shown.words == "unsure, check this: 38 %"
    missing = shown_of({"n_tokens": 3}, SHA, "free", cal.EVAL)
    assert missing.p is None and missing.calibration is None and missing.words == "not calibrated"
    for nothing in (
        shown_of(None, SHA),
        shown_of({"mean_logprob": 0.5}, ""),
        shown_of({}, SHA),
    ):
        assert nothing.p is None and nothing.words == "not calibrated"
    stats = type("Stats", (), {"signals": {"mean_logprob": 4.5}})()
    assert stats_of(stats, SHA, "free", cal.EVAL).p == pytest.approx(1 / (1 + math.exp(-2.5)))
    assert stats_of(object(), SHA).p is None


def test_save_writes_a_private_file_that_load_reads_back(home):
    X = [[0.0], [0.0], [0.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.5], [0.5]]
    y = [0, 0, 0, 1, 0, 1, 1, 1, 1, 0]
    c = cal.fit("free", ("mean_logprob",), X, y, SHA, {"source": "eval"})
    path = cal.save(c)
    assert path == home / "home" / "calibrations" / SHA / "free.json"
    assert (path.stat().st_mode & 0o777) == 0o600
    back = cal.load(SHA, "free")
    assert back.id == c.id and back.model == c.model and back.fitted_on == c.fitted_on
    other = cal.save(c, home / "elsewhere")
    assert other == home / "elsewhere" / SHA / "free.json" and other.is_file()


# --- What the first mutation run left: edges of each statistic ------------------------------------


def test_the_logistic_function_is_clipped_at_30():
    assert cal._sigmoid(np.array([-40.0, 40.0])).tolist() == [1 / (1 + math.exp(30)), 1 / (1 + math.exp(-30))]
    assert cal._sigmoid(np.array([0.0])).tolist() == [0.5]


def test_brier_rewards_telling_answers_apart_where_the_ece_does_not():
    """A constant at the share right is perfectly calibrated (ECE 0) yet scores share x (1 - share);
    probabilities that sort the answers score lower."""
    y = [1, 1, 0, 0]
    assert cal.ece([0.5] * 4, y) == 0.0 and cal.brier([0.5] * 4, y) == pytest.approx(0.25)
    assert cal.brier([0.8, 0.8], [1, 0]) == pytest.approx(0.34)
    assert cal.brier([0.9, 0.7, 0.3, 0.1], y) == pytest.approx(0.05)


def test_one_answer_is_enough_to_measure():
    assert cal.accuracy_at([0.7], [1], 0.5) == 1.0
    assert cal.ece([0.7], [1]) == pytest.approx(0.3)
    got = cal.measures([], [])
    assert got["n"] == 0 and all(
        math.isnan(got[k]) for k in ("accuracy", "auroc", "acc@50", "acc@80", "ece", "brier")
    )


def test_risk_coverage_sorts_by_score():
    _, accuracy = cal.risk_coverage([0.1, 0.9, 0.5], [0, 1, 0])
    assert accuracy.tolist() == pytest.approx([1.0, 0.5, 1 / 3])


def test_the_default_seed_is_0_and_folds_are_whole_numbers():
    labels = [1, 1, 0, 0, 0, 1, 0, 1, 0, 0] * 3
    fold = cal.folds(labels)
    assert fold.dtype.kind == "i" and fold.tolist() == cal.folds(labels, 5, 0).tolist()
    assert fold.tolist() != cal.folds(labels, 5, 1).tolist()
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 2)), np.array(labels)
    assert cal.out_of_fold(X, y).tolist() == cal.out_of_fold(X, y, seed=0).tolist()
    assert cal.out_of_fold(X, y).tolist() != cal.out_of_fold(X, y, seed=1).tolist()


def test_out_of_fold_is_the_other_folds_rate_when_nothing_can_be_learnt():
    """4 right and 2 wrong in 3 folds (sizes 2+1, 1+1, 1+0): each answer gets the share of right
    answers among the answers outside its own fold, worked out here from the folds alone."""
    y = np.array([1, 1, 1, 1, 0, 0])
    fold = cal.folds(y, 3)
    expected = [y[fold != fold[i]].mean() for i in range(len(y))]
    assert sorted(set(np.round(expected, 6))) == [0.6, round(2 / 3, 6), 0.75]
    assert cal.out_of_fold([[0.0]] * 6, y, k=3).tolist() == pytest.approx(expected, abs=1e-6)


def test_out_of_fold_uses_the_penalty_it_is_given():
    y = np.array([1, 0] * 10)
    X = y[:, None].astype(float)  # a signal that is the answer itself
    flat = cal.out_of_fold(X, y, l2=1e9)
    assert np.all(np.abs(flat - 0.5) < 0.01)  # every weight flattened: the other folds' rate, 1/2
    sharp = cal.out_of_fold(X, y)  # the default L2 = 10 over 16 answers: pulled in, but apart
    assert np.all(sharp[y == 1] > 0.6) and np.all(sharp[y == 0] < 0.4)
    assert np.all(cal.out_of_fold(X, y, l2=0.01)[y == 1] > 0.95)


def test_the_damage_is_named_word_for_word(home, capsys):
    path = write(home / "home", "{not json")
    assert cal.load(SHA, "free") is None
    assert capsys.readouterr().err == (
        f"warning: {path} is damaged (Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)); answers show no calibrated confidence until it is deleted "
        "(python -m research eval --calibrate makes a new one)\n"
    )
    cal._DAMAGED.clear()
    write(home / "home", " " * (4 * 2**20 + 1))
    assert cal.load(SHA, "free") is None
    assert "more than the 4 MB a calibration may have" in capsys.readouterr().err


def test_of_stats_asks_for_its_method(home):
    write(home / "home", saved())
    stats = type("Stats", (), {"signals": {"mean_logprob": 0.5}})()
    assert stats_of(stats, SHA, "free", cal.EVAL).p is not None
    assert stats_of(stats, SHA, "p_true", cal.EVAL).p is None  # no calibration of that method


def test_chat_answers_and_eval_answers_read_their_own_calibrations(home):
    from research.engine import CHAT_SYSTEM

    assert cal.style_of(CHAT_SYSTEM) == cal.CHAT and cal.style_of("Reply with one word.") == cal.EVAL
    assert cal.style_of(None) == cal.EVAL
    write(home / "kit", saved())  # the kit's calibration of eval's answers only
    stats = type("Stats", (), {"signals": {"mean_logprob": 0.5}})()
    assert stats_of(stats, SHA).p is None  # the page's answers are chat answers: not this one
    assert stats_of(stats, SHA, "free", cal.EVAL).p is not None
    X, y = [[x] for x in np.linspace(-1, 1, 40)], [float(i % 3 == 0) for i in range(40)]
    chat = cal.fit("free", ("mean_logprob",), X, y, SHA, {"system": CHAT_SYSTEM})
    path = cal.save(chat)  # fitted on answers to the page's prompt: saved where the page reads
    assert path == home / "home" / "calibrations" / SHA / "chat" / "free.json"
    assert stats_of(stats, SHA).calibration == chat.id and cal.load(SHA, "free").id != chat.id
    rated = cal.fit("free", ("mean_logprob",), X, y, SHA, {"source": "ratings"})
    assert cal.fitted_style(rated) == cal.CHAT  # people rate the page's answers
    assert cal.fitted_style(cal.fit("free", ("mean_logprob",), X, y, SHA, {})) == cal.EVAL
    assert "fitted on 40 chat answers of this model" in fitted_line(chat)
    assert "fitted on 40 rated answers" in fitted_line(rated)
    # a file of the other style's answers in a style's folder is passed over, not used
    (home / "home" / "calibrations" / SHA / "chat" / "free.json").write_text(json.dumps(saved()))
    assert stats_of(stats, SHA).p is None and cal.damaged(SHA, "free", cal.CHAT) is None
    # a calibration from ratings saved before calibrations had styles: still the page's, not eval's
    (home / "home" / "calibrations" / SHA / "chat" / "free.json").unlink()
    old = home / "home" / "calibrations" / SHA / "free.json"
    old.write_text(json.dumps(rated.as_dict()))
    assert stats_of(stats, SHA).calibration == rated.id
    assert cal.load(SHA, "free").id != rated.id  # eval reads the kit's calibration of its answers


def test_the_model_line_says_when_only_eval_s_answers_were_calibrated(home):
    from research.confidence.transfer import about

    write(home / "home", saved())  # a person's calibration of eval's answers, none of chat answers
    line = about(SHA)
    assert "eval's few-word answers only" in line and "eval --as-page --calibrate" in line
    assert about("0" * 64) == "no calibration for this model, so its answers show no confidence"


def test_no_model_file_means_no_lookup(home):
    (home / "home" / "calibrations").mkdir(parents=True)
    (home / "home" / "calibrations" / "free.json").write_text(json.dumps(saved() | {"model_sha256": ""}))
    assert shown_of({"mean_logprob": 0.5}, "").p is None

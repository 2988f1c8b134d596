"""From a confidence signal to the probability that an answer is right, and how good that is.

A calibration is a small logistic model over one method's signals (Platt scaling when the method
has one signal), fitted on labelled answers: the kit's questions scored automatically, or a
person's own ratings. It is saved per model file (its SHA-256) and method, as JSON in the
user's data folder (`calibrations/<sha256>/<method>.json`), naming the answers it was fitted on.

The measures of a method (AUROC, the risk-coverage curve, accuracy at 50 % and 80 % coverage,
expected calibration error) are only ever taken on answers the calibration was not fitted on:
out-of-fold predictions of a stratified k-fold cross-validation, with 95 % intervals from a
bootstrap over questions. NumPy only: each piece is a few lines.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from research import files, paths
from research.confidence import methods
from research.confidence.fields import check_numbers, check_sets, check_support, check_words
from research.errors import KitError
from research.hashing import short_key

#: Folds of the cross-validation: 5 keeps 80 % of a 310-question set for each fit.
FOLDS = 5
#: Bootstrap resamples for the intervals: enough for a stable 2.5th/97.5th percentile.
BOOTSTRAP = 1000
#: L2 penalty of the logistic fit, on standardized signals: keeps a fit over a few hundred answers
#: and a dozen correlated signals from chasing noise. On the kit's set with the bundled model the
#: held-out AUROC of the free signals moved by under 0.01 from 1 to 30 (best near 10); chosen there,
#: so figures on that set are a little optimistic, on other questions not.
L2 = 10.0
#: Bins of the expected calibration error: 10 equal-width bins, as Guo et al. 2017.
ECE_BINS = 10
COVERAGES = (0.5, 0.8)


def auroc(scores, labels) -> float:
    """Area under the ROC curve: the chance a right answer scores above a wrong one (ties half).

    `auroc([0.9, 0.2, 0.6], [1, 0, 0])` -> 1.0; NaN when only one kind of answer is present.
    """
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # the mean rank of each tie group
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def risk_coverage(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the answers kept when only the most confident are kept, at each coverage.

    Returns (coverage, accuracy), coverage k/n for k = 1..n: keep the k highest scores.
    """
    s, y = np.asarray(scores, float), np.asarray(labels, float)
    order = np.argsort(-s, kind="mergesort")
    kept = np.cumsum(y[order])
    k = np.arange(1, len(s) + 1)
    return k / len(s), kept / k


def accuracy_at(scores, labels, coverage: float) -> float:
    """Accuracy of the `coverage` fraction of answers with the highest scores."""
    s, y = np.asarray(scores, float), np.asarray(labels, float)
    if len(s) == 0:
        return float("nan")
    k = max(1, int(round(coverage * len(s))))
    return float(y[np.argsort(-s, kind="mergesort")[:k]].mean())


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the mean |accuracy - confidence| over equal-width bins,
    weighted by their answers. `ece([0.8, 0.8], [1, 0])` -> 0.3."""
    p, y = np.asarray(probs, float), np.asarray(labels, float)
    if len(p) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins)
    return float(np.abs(gap).sum() / len(p))


def brier(probs, labels) -> float:
    """Brier score: the mean squared gap between probability and outcome, 0 at best. A constant at
    the share right scores share x (1 - share): unlike the ECE, which such a predictor gets near 0,
    it rewards only probabilities that tell answers apart. `brier([0.8, 0.8], [1, 0])` -> 0.34."""
    p, y = np.asarray(probs, float), np.asarray(labels, float)
    return float(np.mean((p - y) ** 2)) if len(p) else float("nan")


def reliability(probs, labels, bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram's points: per bin, its mean confidence, accuracy and size."""
    p, y = np.asarray(probs, float), np.asarray(labels, float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return [
        {
            "bin": b,
            "confidence": float(p[idx == b].mean()),
            "accuracy": float(y[idx == b].mean()),
            "n": int((idx == b).sum()),
        }
        for b in range(bins)
        if (idx == b).any()
    ]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


@dataclass
class Logistic:
    """L2-regularized logistic regression on standardized features, fitted by Newton's method."""

    names: tuple[str, ...]
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0

    def fit(self, X, y, l2: float = L2, weights=None) -> Logistic:
        """Fit on (X, y); `weights` per answer (mean 1), else all alike."""
        X, y = np.asarray(X, float), np.asarray(y, float)
        u = np.ones(len(y)) if weights is None else np.asarray(weights, float)
        mean, scale = X.mean(0), X.std(0)
        scale[scale == 0] = 1.0
        Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
        w = np.zeros(Z.shape[1])
        penalty = np.full(Z.shape[1], l2)
        penalty[-1] = 0.0  # the intercept is not shrunk
        for _ in range(100):
            p = _sigmoid(Z @ w)
            grad = Z.T @ (u * (p - y)) + penalty * w
            hess = (Z * (u * p * (1 - p))[:, None]).T @ Z + np.diag(penalty) + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        self.mean, self.scale = mean.tolist(), scale.tolist()
        self.weights, self.bias = w[:-1].tolist(), float(w[-1])
        return self

    def predict(self, X) -> np.ndarray:
        Z = (np.asarray(X, float) - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(Z @ np.asarray(self.weights) + self.bias)


def folds(labels, k: int = FOLDS, seed: int = 0) -> np.ndarray:
    """A fold number per answer, stratified by label (each fold holds its share of right ones)."""
    y = np.asarray(labels, bool)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    for kind in (True, False):
        idx = np.flatnonzero(y == kind)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def out_of_fold(X, y, k: int = FOLDS, seed: int = 0, l2: float = L2, weights=None) -> np.ndarray:
    """Each answer's probability from a logistic model fitted on the other folds only (with
    `weights` per answer, as Logistic.fit)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    u = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    fold = folds(y, k, seed)
    p = np.empty(len(y))
    for f in range(k):
        test = fold == f
        if test.any():
            p[test] = Logistic(()).fit(X[~test], y[~test], l2, u[~test]).predict(X[test])
    return p


def measures(probs, labels, scores=None) -> dict:
    """AUROC, accuracy at 50 % and 80 % coverage, overall accuracy, ECE and Brier score of held-out
    answers.

    `scores` rank the answers (default: the probabilities); the ECE and Brier are always of `probs`.
    """
    p, y = np.asarray(probs, float), np.asarray(labels, float)
    s = p if scores is None else np.asarray(scores, float)
    out = {"n": len(y), "accuracy": float(y.mean()) if len(y) else float("nan"), "auroc": auroc(s, y)}
    for c in COVERAGES:
        out[f"acc@{int(c * 100)}"] = accuracy_at(s, y, c)
    out["ece"] = ece(p, y)
    out["brier"] = brier(p, y)
    return out


def with_intervals(probs, labels, scores=None, n: int = BOOTSTRAP, seed: int = 0) -> dict:
    """measures() and, for each, a 95 % percentile interval over a bootstrap of the answers.

    The ECE of a resample is larger than the ECE of the answers it came from (each bin's |gap|
    gains noise that never cancels), so its plain percentile interval sat above the point, at
    times without holding it. Its interval is shifted down by that bias (the resamples' mean
    minus the point), and kept at 0 or above."""
    p, y = np.asarray(probs, float), np.asarray(labels, float)
    s = p if scores is None else np.asarray(scores, float)
    point = measures(p, y, s)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point if k != "n"}
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        m = measures(p[i], y[i], s[i])
        for k in draws:
            if not math.isnan(m[k]):
                draws[k].append(m[k])
    for k, values in draws.items():
        if not values:
            point[k + "_ci"] = (math.nan, math.nan)
            continue
        bias = float(np.mean(values)) - point[k] if k == "ece" else 0.0
        lo, hi = np.percentile(values, 2.5) - bias, np.percentile(values, 97.5) - bias
        point[k + "_ci"] = (float(max(lo, 0.0)), float(max(hi, 0.0)))
    return point


@dataclass
class Calibration:
    """A fitted map from one method's signals to P(right), and what it was fitted on."""

    method: str
    model_sha256: str
    model: Logistic
    fitted_on: dict  # {"source": "eval"|"ratings", "path", "n", "right", "run", "question_ids_sha256", ...}
    held_out: dict | None = None  # its cross-validated measures on the same answers, when known
    created: str = ""
    schema: int = 1
    # From which probability "probably right" and "likely right" are said (None: never), and the
    # question-side signals of the questions it was fitted on: research.confidence.transfer.
    words: dict | None = None
    support: dict | None = None

    @property
    def id(self) -> str:
        """`"free@b179c952:3f2a9c0d"`: method, model file and a hash of the fit."""

        digest = short_key(asdict(self.model), 8)
        return f"{self.method}@{self.model_sha256[:8]}:{digest}"

    def probability(self, signals: dict) -> float | None:
        """P(right) of one answer from its signals; None when a signal it needs is missing."""
        values = [signals.get(k) for k in self.model.names]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            return None
        return float(self.model.predict([values])[0])

    def as_dict(self) -> dict:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        m = d["model"]
        model = Logistic(tuple(m["names"]), m["mean"], m["scale"], m["weights"], m["bias"])
        return cls(
            d["method"],
            d["model_sha256"],
            model,
            d["fitted_on"],
            d.get("held_out"),
            d.get("created", ""),
            words=d.get("words"),
            support=d.get("support"),
        )


def fit(
    method: str, names: tuple[str, ...], X, y, model_sha256: str, fitted_on: dict, weights=None
) -> Calibration:
    """A calibration of `method` fitted on all of (X, y), with its cross-validated measures
    (`weights` per answer: research.confidence.transfer weighs question sets alike)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 2 * FOLDS or y.sum() < 2 or (1 - y).sum() < 2:
        raise KitError(
            f"too few labelled answers to calibrate ({len(y)}, {int(y.sum())} right): at least "
            f"{2 * FOLDS} with two right and two wrong"
        )
    held = measures(out_of_fold(X, y, weights=weights), y)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fitted_on = {**fitted_on, "n": len(y), "right": int(y.sum())}
    model = Logistic(names).fit(X, y, weights=weights)
    return Calibration(method, model_sha256, model, fitted_on, held, now)


#: The answers a calibration was fitted on, which are those it holds for: "eval" (`eval`'s greedy
#: few-word answers) or CHAT (answers as the page and `research chat` give them: a chat's system
#: prompt, sampled, a few sentences long). The same model's signals mean other things in each:
#: the shipped calibration of eval's answers said 19 % on average of the page's answers to the
#: kit's 310 questions, 40 % of which were right.
EVAL, CHAT = "eval", "chat"


def style_of(system: str | None) -> str:
    """The answers a system prompt gives: CHAT for the page's (research.engine.CHAT_SYSTEM), else
    EVAL, for eval's own and the prompts a person evaluates with."""
    from research.engine import CHAT_SYSTEM

    return CHAT if system == CHAT_SYSTEM else EVAL


def fitted_style(cal: Calibration) -> str:
    """The answers `cal` was fitted on: CHAT for people's ratings of the page's answers and for
    answers to the page's system prompt, else EVAL."""
    f = cal.fitted_on or {}
    if f.get("answers") in (EVAL, CHAT):  # said by save()
        return f["answers"]
    return CHAT if f.get("source") == "ratings" else style_of(f.get("system"))


def folder(model_sha256: str, root: Path | None = None, style: str = EVAL) -> Path:
    """calibrations/<sha256> for EVAL's answers, calibrations/<sha256>/chat for CHAT's."""
    base = (root or paths.user_data_dir() / "calibrations") / model_sha256
    return base / CHAT if style == CHAT else base


def save(cal: Calibration, root: Path | None = None, style: str | None = None) -> Path:
    """Write the calibration as JSON (calibrations/<sha256>/<method>.json, or under chat/ for one
    fitted on chat answers: `style`, by default fitted_style), private to its owner (0600 in 0700
    folders); returns its path. A crash leaves the old calibration, never half a new one."""
    style = style or fitted_style(cal)
    cal.fitted_on = {**(cal.fitted_on or {}), "answers": style}  # what load() checks
    path = folder(cal.model_sha256, root, style) / f"{cal.method}.json"
    return paths.write_private(path, json.dumps(cal.as_dict(), indent=1))


def shipped_dir() -> Path:
    """Calibrations that ship with the kit (the bundled model's, fitted on its question set)."""
    return paths.kit_data_dir() / "calibrations"


#: Bytes of a calibration file read at most: one fitted on thousands of ratings, with their ids,
#: is a few hundred KB; a larger file is no calibration the kit wrote.
MAX_FILE_MB = 4
#: Signals a calibration may read at most (the largest method reads 15).
MAX_FEATURES = 64
#: Calibrations found damaged, by (model file, method, style): named once, then passed over.
_DAMAGED: dict[tuple[str, str, str], Path] = {}


def validate(d, model_sha256: str, method: str) -> Calibration:
    """A calibration read from a file, checked before any answer uses it: a JSON object of this
    model file and method, its signal names known, its weights finite and of one shape.
    ValueError saying what is wrong otherwise."""

    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise ValueError("not a calibration (no model object)")
    if d.get("method") != method:
        raise ValueError(f"it is for method {str(d.get('method'))[:40]!r}, not {method!r}")
    if d.get("model_sha256") != model_sha256:
        raise ValueError("it is for another model file (its model_sha256 differs)")
    m = d["model"]
    names = m.get("names")
    known = {s for meth in methods.METHODS.values() for s in meth.signals}
    if (
        not isinstance(names, list)
        or not 0 < len(names) <= MAX_FEATURES
        or len(set(map(str, names))) < len(names)
    ):
        raise ValueError("its signal names are not a list of distinct names")
    unknown = [str(x)[:40] for x in names if not isinstance(x, str) or x not in known]
    if unknown:
        raise ValueError(f"it reads signals the kit does not know ({', '.join(unknown[:3])})")
    n = len(names)
    mean = check_numbers(m.get("mean"), n, "mean")
    scale = check_numbers(m.get("scale"), n, "scale", positive=True)
    weights = check_numbers(m.get("weights"), n, "weights")
    (bias,) = check_numbers([m.get("bias")], 1, "bias")
    if not isinstance(d.get("fitted_on"), dict) or not isinstance(d.get("held_out") or {}, dict):
        raise ValueError("what it was fitted on is not recorded as an object")
    if not isinstance(d.get("created", ""), str):
        raise ValueError("its creation time is not a string")
    model = Logistic(tuple(names), mean, scale, weights, bias)
    check_sets(d["fitted_on"].get("sets"))
    count = d["fitted_on"].get("n")
    if count is not None and not (type(count) is int and 0 <= count < 10**9):
        raise ValueError("the number of answers it was fitted on is not a whole number")
    mean_p = (d.get("held_out") or {}).get("mean_p")
    if mean_p is not None and not (check_numbers([mean_p], 1, "its held-out mean") and 0 <= mean_p <= 1):
        raise ValueError("its held-out mean probability lies outside 0-1")
    cal = Calibration(method, model_sha256, model, d["fitted_on"], d.get("held_out"), d.get("created", ""))
    cal.words, cal.support = check_words(d.get("words")), check_support(d.get("support"))
    return cal


def damaged(model_sha256: str, method: str, style: str = EVAL) -> Path | None:
    """The calibration file of this model, method and style that load() found damaged, if any."""
    return _DAMAGED.get((model_sha256, method, style))


def load(model_sha256: str, method: str, style: str = EVAL) -> Calibration | None:
    """The person's own calibration of this model file and method for answers of this style (EVAL
    or CHAT), else the kit's, else None. A file fitted on the other style's answers (fitted_style)
    is passed over; for CHAT, a person's calibration from ratings saved before calibrations had
    styles (in the EVAL folder) is still theirs.

    A damaged or hostile file (wrong types or shapes, another method or model, not JSON, too
    large, not a regular file) costs the calibrated figure only, never the answer: it is named
    once in a warning on stderr and None is returned, as for a model without one.
    """
    key = (model_sha256, method, style)
    own = paths.user_data_dir() / "calibrations"
    places = [(own, style), *([(own, EVAL)] if style == CHAT else []), (shipped_dir(), style)]
    for root, kind in places:
        path = folder(model_sha256, root, kind) / f"{method}.json"
        if not path.exists() and not path.is_symlink():
            continue
        try:
            data = files.read_file(path, MAX_FILE_MB, what_kind="a calibration")
            cal = validate(json.loads(data), model_sha256, method)
        except (KitError, ValueError, RecursionError, MemoryError) as e:
            if kind != style:  # the other style's file: its own loads name it
                continue
            if _DAMAGED.get(key) != path:
                _DAMAGED[key] = path
                why = files.clean(" ".join(str(e).split())[:160])  # a name read from the file
                again = "eval --as-page --calibrate" if style == CHAT else "eval --calibrate"
                print(
                    f"warning: {files.shown(path)} is damaged ({why}); answers show no calibrated "
                    f"confidence until it is deleted (python -m research {again} makes a new one)",
                    file=sys.stderr,
                )
            return None
        if fitted_style(cal) != style:
            continue
        _DAMAGED.pop(key, None)
        return cal
    _DAMAGED.pop(key, None)  # none there now: a damaged one was deleted
    return None

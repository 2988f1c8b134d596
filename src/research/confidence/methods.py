"""How likely an answer is to be right: the registry of confidence methods, and the words shown.

Signals come in three costs: free (read while the answer is generated: research.engine.signals),
samples (more answers compared with it: research.confidence.sampled) and an extra pass (P(True),
the same module). A method names the signals it reads; a calibration
(research.confidence.calibration) maps them to the probability that the answer is right.
`describe(p)` puts that probability into words for the page and the terminal, and
Confidence.abstains is the one place that decides what "answer only when sure" withholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from research.engine.signals import QUESTION
from research.registry import Registry

#: The free signals, in the order of a calibration's features.
FREE = (
    "mean_logprob",
    "min_logprob",
    "first_logprob",
    "mean_entropy",
    "max_entropy",
    "answer_first_logprob",
    "answer_mean_logprob",
    "answer_min_logprob",
    "answer_mean_entropy",
    "n_tokens",
)
#: A free signal added after the sampled methods were fitted: whether the answer holds a word of
#: the kind its question asks for (research.qa.words.type_match). In "free" and "free_question",
#: not in FREE, so that "combined" keeps the signals its calibration was fitted on.
ANSWER_TYPE = ("type_match",)
SAMPLED = ("lexical_agreement", "agreement", "semantic_entropy")
#: Sampled signals added after the first measurement: how far the samples agree among
#: themselves, whatever the answer said (Lin, Trivedi and Sun 2023, "Generating with Confidence").
#: Kept apart from SAMPLED so that "combined" keeps the signals its calibration was fitted on.
AMONG_SAMPLES = ("sample_consistency", "eigv")


@dataclass(frozen=True)
class Method:
    """A confidence method: the signals it reads and what they cost."""

    name: str
    signals: tuple[str, ...]
    cost: str  # "free", "samples" or "extra pass"
    help: str


METHODS: Registry[Method] = Registry("confidence method")


def register_method(name: str, signals: Sequence[str], cost: str, help: str) -> Method:
    """Register a confidence method (research.registry, as the chat formats are)."""
    return METHODS.register(name)(Method(name, tuple(signals), cost, help))


register_method("mean_logprob", ["mean_logprob"], "free", "mean log-probability of the answer's tokens")
register_method("first_token", ["first_logprob"], "free", "log-probability of the answer's first token")
register_method(
    "answer_logprob",
    ["answer_mean_logprob"],
    "free",
    "mean log-probability of the words that do not restate the question",
)
register_method("entropy", ["mean_entropy"], "free", "mean entropy of the distributions the tokens came from")
register_method("free", FREE + ANSWER_TYPE, "free", "all free signals in one logistic model")
register_method(
    "question",
    QUESTION,
    "free",
    "how unexpected the question's own words are to the model, read while the prompt is evaluated: "
    "known before any answer is written (research.engine.signals.question_signals)",
)
register_method(
    "free_question",
    FREE + ANSWER_TYPE + QUESTION,
    "free",
    "the answer's free signals and the question's in one logistic model",
)
register_method(
    "lexical",
    ["lexical_agreement"],
    "samples",
    "words the sampled answers share with the answer, beyond the question's (mean token F1)",
)
register_method("agreement", ["agreement"], "samples", "share of sampled answers with the same short answer")
register_method(
    "semantic_entropy", ["semantic_entropy"], "samples", "entropy of the sampled answers' meanings"
)
register_method("p_true", ["p_true"], "extra pass", "the model's own probability that its answer is true")
register_method(
    "combined", FREE + SAMPLED, "samples", "free signals and sampled agreement in one logistic model"
)
register_method(
    "lexical_logprob",
    ["lexical_agreement", "answer_mean_logprob"],
    "samples",
    "lexical agreement and the answer's own mean log-probability: the strongest sampled and the "
    "strongest free signal, two weights where combined fits thirteen",
)
register_method(
    "consistency",
    ["sample_consistency"],
    "samples",
    "how far the sampled answers agree with each other (mean pairwise token F1): how settled the "
    "model is on the question, whatever it answered",
)
register_method(
    "eigv",
    ["eigv"],
    "samples",
    "how many different meanings the answer and its samples hold: the eigenvalues of their "
    "similarity graph's Laplacian (Lin et al. 2023)",
)
register_method(
    "sampled",
    ["lexical_agreement", "sample_consistency", "eigv", "answer_mean_logprob"],
    "samples",
    "agreement with the answer, agreement among the samples, their number of meanings and the "
    "answer's own mean log-probability, in one logistic model",
)
#: Answers sampled a question by default: as many as the shipped calibrations of the sampled
#: methods were fitted on (data/calibrations), so that they apply as they are. On the kit's 310
#: questions the lexical agreement's AUROC was 0.76 with 4, 0.78 with 8 and 0.80 with 16.
SAMPLES = 16
#: The method the kit recommends when sampling is affordable (`eval --confidence samples`): fixed
#: on the 310 questions of data/qa, before the fresh questions of data/heldout were answered, and
#: judged there with the calibration fitted on data/qa (data/heldout/README.md).
CHOSEN = "lexical_logprob"
#: The method the chat page and `research chat` show: free, so an answer is never slower for it.
DEFAULT = "free"
#: "Answer only when sure" on the page withholds answers below this probability of being right:
#: below it an answer is more likely wrong than right.
SURE = 0.5
#: What "answer only when sure" shows in place of an answer below its threshold (the page and the
#: terminal alike; Confidence.abstains decides).
NOT_SURE = "I'm not sure."


# What it shows.
#: Words for a probability, from the top: at or above the bound, these words.
BANDS = (
    (0.75, "likely right"),
    (0.5, "probably right"),
    (0.25, "unsure, check this"),
    (0.0, "likely wrong, check this"),
)


#: The words of an answer whose model has a calibration that could not be used (named once on stderr).
DAMAGED = "not calibrated (its saved calibration is damaged)"


#: The words of an answer to a question unlike those its calibration was fitted on
#: (research.confidence.transfer.unlike): no number, which would be a guess.
UNLIKE = "unknown: unlike the questions its confidence was measured on, check this"


def describe(p: float | None, bounds: dict | None = None, unlike: bool = False) -> tuple[str, float | None]:
    """Words and number for a calibrated confidence: `describe(0.82)` -> ("likely right", 0.82).

    None (no calibration for this model yet) -> ("not calibrated", None). `bounds`: a
    calibration's own bounds for "probably right" and "likely right" (None in them: never said;
    research.confidence.transfer.word_bounds), where answers so worded were right often enough
    on every question set it was judged on; an answer below them is "unsure". `unlike`: the
    question is unlike those the calibration saw: UNLIKE, and no number.
    """
    if p is None or math.isnan(p):
        return "not calibrated", None
    if unlike:
        return UNLIKE, None
    for bound, words in BANDS:
        if bounds and words in bounds:
            bound = bounds[words] if bounds[words] is not None else math.inf
        if p >= bound:
            return words, p
    return BANDS[-1][1], p


def label(p: float | None, bounds: dict | None = None, unlike: bool = False) -> str:
    """One phrase for the page and the terminal: `label(0.82)` -> "likely right, 82 %",
    `label(0.3)` -> "unsure, check this: 30 %" (describe() says what `bounds` and `unlike` do)."""
    words, value = describe(p, bounds, unlike)
    if value is None:
        return words
    return f"{words}{': ' if ',' in words else ', '}{round(value * 100)} %"


@dataclass(frozen=True)
class Confidence:
    """The calibrated confidence of one answer, and what produced it."""

    p: float | None  # probability the answer is right; None without a calibration
    method: str
    calibration: str | None  # the calibration's id, None without one
    words: str
    unlike: bool = False  # the question is unlike those the calibration saw (no number shown)

    def as_dict(self) -> dict:
        return {
            "confidence": self.p,
            "confidence_method": self.method,
            "calibration": self.calibration,
            "confidence_words": self.words,
            "unlike": self.unlike,
        }

    def abstains(self, below: float | None) -> bool:
        """Whether "answer only when sure" withholds this answer (below the threshold, or to a
        question unlike those its calibration saw, where its number cannot be trusted; an
        uncalibrated answer is never withheld: there is no number to judge it by)."""
        return below is not None and self.p is not None and (self.p < below or self.unlike)

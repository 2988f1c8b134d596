"""Which answers to trust, and how sure to say the kit is.

methods (the registry of confidence methods, the probability in words, Confidence and its
abstention), sampled (signals that cost more answers: agreement, semantic entropy, P(True), teacher
forcing), people (people's verdicts as labels, recalibration), calibration (signals to a
probability, fitted and saved per model file) and selective (sorting and abstention judged on
held-out answers). The names below are the public ones; the free signals themselves are read while
decoding (research.engine.signals).

May import: the base modules, research.qa, models, llamacpp, engine and ratings.
"""

from research.confidence.methods import (
    AMONG_SAMPLES,
    BANDS,
    CHOSEN,
    DAMAGED,
    DEFAULT,
    FREE,
    METHODS,
    NOT_SURE,
    SAMPLED,
    SAMPLES,
    SURE,
    UNLIKE,
    Confidence,
    Method,
    describe,
    label,
    register_method,
)
from research.confidence.people import disagreements, rated_signals, rating_label, recalibrate
from research.confidence.sampled import (
    P_TRUE_PROMPT,
    agreement_signals,
    clusters,
    eigv,
    p_true,
    same_answer,
    sampled_signals,
    signals_for,
)
from research.confidence.transfer import about, of_signals, of_stats

__all__ = [
    "AMONG_SAMPLES",
    "BANDS",
    "CHOSEN",
    "Confidence",
    "DAMAGED",
    "DEFAULT",
    "FREE",
    "METHODS",
    "Method",
    "NOT_SURE",
    "P_TRUE_PROMPT",
    "SAMPLED",
    "SAMPLES",
    "SURE",
    "UNLIKE",
    "about",
    "agreement_signals",
    "clusters",
    "describe",
    "disagreements",
    "eigv",
    "label",
    "of_signals",
    "of_stats",
    "p_true",
    "rated_signals",
    "rating_label",
    "recalibrate",
    "register_method",
    "same_answer",
    "sampled_signals",
    "signals_for",
]

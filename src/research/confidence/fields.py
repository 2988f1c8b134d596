"""The fields of a saved calibration file, checked before any answer uses them: numbers that are
finite, the question sets it names, its word bounds and its support (research.confidence.transfer).
Each check raises ValueError saying what is wrong; research.confidence.calibration.validate calls them.
"""

from __future__ import annotations

import math


def check_numbers(value, n: int, what: str, positive: bool = False) -> list[float]:
    """`value` as `n` finite numbers (> 0 with `positive`); ValueError naming `what` otherwise."""
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"{what} is not a list of {n} numbers")
    for v in value:
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not number or (positive and v <= 0):
            kind = "finite positive" if positive else "finite"
            raise ValueError(f"{what} holds {str(v)[:20]!r}, not a {kind} number")
    return [float(v) for v in value]


#: The words a calibration may set bounds for, and the least bound each may have: "probably right"
#: is never said below 50 %, "likely right" never below 75 % (research.confidence.transfer).
WORD_FLOORS = {"probably right": 0.5, "likely right": 0.75}
#: Question sets a calibration may name, and the characters of a name.
MAX_SETS, MAX_SET_NAME = 20, 40


def check_sets(value) -> None:
    """A calibration's fitted_on.sets, checked: at most MAX_SETS names of at most MAX_SET_NAME
    characters, each with whole numbers 0 <= right <= n."""
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > MAX_SETS:
        raise ValueError(f"the question sets it names are not an object of at most {MAX_SETS}")
    for name, s in value.items():
        if len(name) > MAX_SET_NAME or not isinstance(s, dict):
            raise ValueError("a question set it names is not a short name with counts")
        n, right = s.get("n"), s.get("right")
        if not all(type(v) is int for v in (n, right)) or not 0 <= right <= n < 10**9:
            raise ValueError("a question set's counts are not whole numbers with 0 <= right <= n")


def check_words(value) -> dict | None:
    """A calibration's word bounds, checked: {"probably right": p or None, "likely right": p or
    None}, each None (never said) or at least its floor (WORD_FLOORS), "likely right" never below
    "probably right" and never said where "probably right" is not."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(WORD_FLOORS):
        raise ValueError("its word bounds do not name exactly 'probably right' and 'likely right'")
    for words, floor in WORD_FLOORS.items():
        v = value[words]
        if v is not None:
            check_numbers([v], 1, "a word bound")
            if not floor <= v <= 1:
                raise ValueError(f"its bound for {words!r} lies outside {floor:g}-1")
    probably, likely = value["probably right"], value["likely right"]
    if likely is not None and (probably is None or likely < probably):
        raise ValueError("its bound for 'likely right' lies below the one for 'probably right'")
    return dict(value)


def check_support(value) -> dict | None:
    """A calibration's support (research.confidence.transfer.support_of), checked."""
    from research.engine.signals import QUESTION

    if value is None:
        return None
    if not isinstance(value, dict) or value.get("names") != list(QUESTION):
        raise ValueError("its support does not name the question-side signals")
    n = len(QUESTION)
    out = dict(value)
    out["mean"] = check_numbers(value.get("mean"), n, "the support's mean")
    out["scale"] = check_numbers(value.get("scale"), n, "the support's scale", positive=True)
    (out["limit"],) = check_numbers([value.get("limit")], 1, "the support's limit", positive=True)
    return out

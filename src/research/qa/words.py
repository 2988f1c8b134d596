"""Words of answers and questions, one home for what several parts of the kit compare.

The stop words, the normalized word (`"Canberra," -> "canberra"`), an answer's content words (those
of its first sentence that neither restate the question nor are stop words: the answer proper) and
the token F1 of two word lists. The free confidence signals (research.engine.signals), the sampled
ones (research.confidence.sampled), the scores (research.qa.scoring) and a library answer's
attribution (research.library.grounded) all use these.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

#: Words that say nothing of the answer proper. A short list on purpose: the free and sampled
#: confidence signals were measured and calibrated with it (data/calibrations).
STOP_WORDS = frozenset(
    "the a an of in on at to is was are were be been by for with and or as from that this which who "
    "what when where it its his her their he she they".split()
)
#: Besides the stop words, the words of a question that tie no answer to it (research.qa.scoring's
#: short-answer extraction leaves both out when it looks for the question in an answer).
QUESTION_WORDS = frozenset("whom whose how many much did does do".split())
ALNUM = re.compile(r"[^\W_]+", re.U)
_NOT_AN_END = re.compile(
    r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|St|Mt|Jr|Sr|Prof|No|vs|etc|approx|ca|e\.g|i\.e|U\.S))\.$"
)


def first_sentence(text: str) -> str:
    """The first line's first sentence: `"Paris. It is big."` -> `"Paris."`; initials stay."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    for m in re.finditer(r"[.!?](?=\s|$)", line):  # "3.14" has no space after its point
        head = line[: m.end()]
        if m.end() < len(line) and _NOT_AN_END.search(head):
            continue  # "John F. Kennedy", "St. Louis"
        return head
    return line


def norm_word(text: str) -> str:
    """`norm_word("Canberra,")` -> "canberra": lower case, letters and digits only."""
    return "".join(ALNUM.findall(text.lower()))


def asked(question: str) -> set[str]:
    """The question's own words, normalized: what an answer that restates them adds nothing with."""
    return {norm_word(w) for w in ALNUM.findall(question)}


def terms(text: str) -> list[str]:
    """The normalized words of `text` that are not stop words: `terms("The 3 eggs.")` -> ["3", "eggs"]."""
    return [w for w in (norm_word(x) for x in ALNUM.findall(text)) if w and w not in STOP_WORDS]


def content_words(text: str, question: str) -> list[str]:
    """The normalized words of the first sentence that neither restate the question nor are
    stopwords: `("The capital of Australia is Canberra.", "What is the capital of Australia?")`
    -> ["canberra"]."""
    said = asked(question)
    return [w for w in terms(first_sentence(text)) if w not in said]


def token_f1(a: Sequence[str], b: Sequence[str]) -> float:
    """Token F1 of two word lists (SQuAD's): `token_f1(["a", "b"], ["b", "c"])` -> 0.5."""
    same = sum((Counter(a) & Counter(b)).values())
    return 0.0 if same == 0 else 2 * same / (len(a) + len(b))

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
        # the abbreviation ends the head: search its last characters only (a run of initials
        # would make searching all of it quadratic); \b still reads the character before them
        if m.end() < len(line) and _NOT_AN_END.search(head, max(0, len(head) - 12)):
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
    return [norm_word(w) for w in _new_words(text, question)]


def _new_words(text: str, question: str) -> list[str]:
    """content_words() as written in `text` (their case kept: type_match reads capitals)."""
    said = asked(question)
    return [
        w
        for w in ALNUM.findall(first_sentence(text))
        if (n := norm_word(w)) and n not in said and n not in STOP_WORDS
    ]


def token_f1(a: Sequence[str], b: Sequence[str]) -> float:
    """Token F1 of two word lists (SQuAD's): `token_f1(["a", "b"], ["b", "c"])` -> 0.5."""
    same = sum((Counter(a) & Counter(b)).values())
    return 0.0 if same == 0 else 2 * same / (len(a) + len(b))


#: Questions that ask for a number or a date ("when", "how many", "what year" ...), and those that
#: ask for a name ("who", "where"), by their first words (after "in"/"on"/"by": "in what year").
_ASKS_NUMBER = re.compile(
    r"^(?:(?:in|on|by|at|since|until)\s+)?(?:when|(?:what|which)\s+(?:year|date|century|decade|percentage)"
    r"|how\s+(?:many|much|old|long|far|tall|high|big|deep|fast|heavy|large|wide|often))\b"
)
_ASKS_NAME = re.compile(r"^(?:(?:in|from|to|by|of|for|with)\s+)?(?:who|whom|whose|where)\b")
#: Words that state a number or a date without a digit.
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
    "hundred thousand million billion trillion dozen half first second third "
    "january february april june july august september october november december".split()
)


def asks_for(question: str) -> str:
    """What kind of answer a question asks for, by its first words: "number" (a number or a date:
    "When ...", "How many ...", "In what year ..."), "name" ("Who ...", "Where ...": a person or a
    place, written with a capital) or "any"."""
    q = " ".join(ALNUM.findall(question.lower()))
    if _ASKS_NUMBER.match(q):
        return "number"
    return "name" if _ASKS_NAME.match(q) else "any"


def type_match(answer: str, question: str) -> bool:
    """Whether the answer proper (its first sentence's words that neither restate the question nor
    are stop words) holds a word of the kind the question asks for (`asks_for`): a digit or a
    number word for a number, a capitalized word for a name, any word otherwise. A small model's
    answer that only restates the question ("President of the United States during the Cuban
    Missile Crisis.") or answers another question ("The laws of planetary motion are a concept
    ...") has none: `type_match("Canberra.", "What is the capital of Australia?")` -> True,
    `type_match("The first woman to be the first woman", "Who was the first woman in space?")` ->
    False. An answer-type check as question-answering systems have long made one."""
    new = _new_words(answer, question)
    kind = asks_for(question)
    if kind == "number":
        return any(any(c.isdigit() for c in w) or norm_word(w) in _NUMBER_WORDS for w in new)
    if kind == "name":
        return any(w[:1].isupper() for w in new)
    return bool(new)

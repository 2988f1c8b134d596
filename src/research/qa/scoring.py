"""Scores that compare with published figures, the short answer inside a sentence, and hedging.

Three normalizations, each exactly as its official script has it, because exact match moves by
whole points with the normalization and published figures name theirs:

- SQuAD v1.1's evaluate script (`normalize_answer`): lower case, drop punctuation, drop the
  articles a/an/the, collapse whitespace; exact match and token F1, the best over references.
- NQ-open's (google-research/language, orqa/utils/eval_utils.py): the same after Unicode NFD.
- lm-evaluation-harness's nq_open task (exact_match with ignore_case, ignore_punctuation and
  the regex `\\b(?:The |the |An |A |The |a |an )`): no whitespace collapsing, an article is only
  dropped with the space after it.

A chat model answers in sentences ("The capital of Australia is Canberra."), which no exact
match accepts: `extract_answer` takes the short answer out of it, and the scores are given for
the answer as it came and for that short answer. `hedged` finds an answer stated with doubt
("I think", "probably"), so that a wrong answer stated as a fact (hallucinated) is counted
apart from a wrong answer the model itself doubted and from a refusal.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Sequence

from research.qa.words import QUESTION_WORDS, STOP_WORDS, first_sentence, token_f1

_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's normalize_answer: `"The  Nile!"` -> `"nile"`; `"Jean-Paul"` -> `"jeanpaul"`."""
    text = "".join(c for c in text.lower() if c not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def nq_normalize(text: str) -> str:
    """NQ-open's normalize_answer: SQuAD's after Unicode NFD (`"Beyoncé"` keeps its accent as a
    separate combining mark, so it still differs from `"Beyonce"`)."""
    return squad_normalize(unicodedata.normalize("NFD", text))


def squad_f1(prediction: str, reference: str, norm: Callable[[str], str] = squad_normalize) -> float:
    """SQuAD v1.1's token F1: `squad_f1("the Nile river", "Nile")` -> 0.667."""
    return token_f1(norm(prediction).split(), norm(reference).split())


def best(metric: Callable[[str, str], float], prediction: str, references: Sequence[str]) -> float:
    """The best score over the references (metric_max_over_ground_truths); 0 with none."""
    return max((float(metric(prediction, r)) for r in references), default=0.0)


def exact_match(
    prediction: str, references: Sequence[str], norm: Callable[[str], str] = nq_normalize
) -> float:
    """1.0 when the normalized prediction equals a normalized reference (NQ-open's by default)."""
    return best(lambda p, r: norm(p) == norm(r), prediction, references)


def f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD's token F1, the best over the references."""
    return best(squad_f1, prediction, references)


#: lm-evaluation-harness nq_open's regexes_to_ignore (lm_eval/tasks/nq_open/nq_open.yaml).
LM_EVAL_NQ_IGNORE = (r"\b(?:The |the |An |A |The |a |an )",)
_NO_PUNCT = str.maketrans("", "", string.punctuation)


def lm_eval_exact_match(
    prediction: str,
    references: Sequence[str],
    regexes_to_ignore: Sequence[str] = LM_EVAL_NQ_IGNORE,
    ignore_case: bool = True,
    ignore_punctuation: bool = True,
    ignore_numbers: bool = False,
) -> float:
    """lm-evaluation-harness's exact_match (exact_match_hf_evaluate, a port of HF evaluate's) as
    its nq_open task configures it, the best over the references: regexes removed first, then
    case, punctuation and digits, then plain equality (two strings left empty match: HF evaluate
    has since refused that, lm-evaluation-harness has not)."""

    def norm(text: str) -> str:
        for rx in regexes_to_ignore:
            text = re.sub(rx, "", text)
        if ignore_case:
            text = text.lower()
        if ignore_punctuation:
            text = text.translate(_NO_PUNCT)
        if ignore_numbers:
            text = text.translate(str.maketrans("", "", string.digits))
        return text

    return best(lambda p, r: norm(p) == norm(r), prediction, references)


# The short answer inside a sentence.
#: Abbreviations and initials whose full stop does not end a sentence ("John F. Kennedy", "St. Louis").
_LEAD_IN = re.compile(
    r"^(?:(?:the )?(?:correct |short |final )?answer(?: to (?:the|your|this) question)? (?:is|would be)[:\s]|"
    r"answer:|a:|it (?:is|was|'s)\s|that (?:is|was|'s)\s|sure[,!.]\s|yes[,!.]\s|well[,]\s)\s*",
    re.I,
)
_COPULA = re.compile(r"\b(?:is|was|are|were|'s)\b\s+", re.I)
#: Words after a copula that still belong to the question's frame: "was won by", "is located in".
_FRAME = re.compile(
    r"^(?:(?:also |often |commonly |generally |usually |widely )?(?:called|named|known|located|situated|"
    r"held|won|written|painted|composed|invented|discovered|founded|built|designed|directed|"
    r"created|made|produced|played|sung|developed|led|given|awarded|considered|believed|"
    r"credited|attributed|worth|equal|set|signed|published|released|elected|born|buried)"
    r"(?:\s+(?:as|by|in|at|on|to|from|for|after|with))?\s+)+",
    re.I,
)
_CUT = re.compile(
    r"\s*(?:,|;|:|\(|\s[-–—]\s|\b(?:which|who|that|where|when|because|since|but|and is|and was)\b|"
    r"\s(?:in|on|at|near|during|for|from) (?:a|an|the)\b)"
)
_WORD = re.compile(r"[^\W_]+", re.U)
#: Words too common to tie a sentence's subject to the question.
_COMMON = STOP_WORDS | QUESTION_WORDS


def extract_answer(answer: str, question: str = "") -> str:
    """The short answer inside a sentence, for exact match: the part after the verb when the
    sentence restates the question, cut at the first clause; a short answer as it is.

    `extract_answer("The capital of Australia is Canberra.", "What is the capital of Australia?")`
    -> `"Canberra"`; `"It was won by Spain, who beat..."` -> `"Spain"`.
    """
    sentence = first_sentence(answer)
    sentence = _LEAD_IN.sub("", sentence).strip()
    # Its main clause: "... 206 bones, but only 23 are visible" keeps the bones.
    sentence = re.split(r",\s*(?:but|while|whereas|although|though)\b", sentence, maxsplit=1)[0]
    qwords = {w.lower() for w in _WORD.findall(question)} - _COMMON

    def overlap(part: str) -> int:
        return len({w.lower() for w in _WORD.findall(part)} & qwords)

    m = _COPULA.search(sentence)
    if m and sentence[: m.start()].strip():
        # "The capital of Australia is Canberra": the side that restates the question is the frame,
        # the other side the answer ("The heart is the organ that pumps blood" -> "The heart").
        left, right = sentence[: m.start()], sentence[m.end() :]
        candidate = _CUT.split(_FRAME.sub("", right), maxsplit=1)[0]
        sentence = left if overlap(candidate) > overlap(_CUT.split(left, maxsplit=1)[0]) else right
    sentence = _FRAME.sub("", sentence)
    sentence = _CUT.split(sentence, maxsplit=1)[0]
    sentence = re.sub(r"^(?:in|on|at|by|from)\s+", "", sentence.strip(), flags=re.I)  # "in Paris"
    return sentence.strip().rstrip(".!?").strip().strip("\"'“”‘’*").strip()


#: Doubt stated in the answer. Not "about" or "approximately": those qualify a number, not the
#: model's belief.
HEDGE = re.compile(
    r"\b(?:i think|i believe|i guess|i suppose|i'?m not (?:entirely |completely |100 ?% )?(?:sure|certain)|"
    r"i am not (?:entirely |completely )?(?:sure|certain)|not (?:entirely |completely )?sure|probably|"
    r"possibly|perhaps|maybe|might (?:be|have)|may (?:be|have)|could be|it seems|seems to be|"
    r"as far as i know|if i recall|if i remember|to my knowledge|i'?m guessing|likely|unclear|"
    r"uncertain|not certain)\b",
    re.I,
)


def hedged(answer: str) -> bool:
    """Whether the answer states doubt: `hedged("I think it is Lyon.")` -> True."""
    return bool(HEDGE.search(answer))


# The kit's own scores (research.evaluation.run's records since the first version).
REFUSAL = re.compile(
    r"\b(i (do not|don't|dont) know|i'?m not sure|i am not sure|i cannot (answer|say)|i can'?t (answer|say)|"
    r"no information|not able to answer|unable to answer|i have no (idea|knowledge))\b",
    re.I,
)


def normalize(text: str) -> str:
    """The kit's normalization, kinder to chat answers than SQuAD's: accents folded and
    punctuation read as a space (`"Jean-Paul"` -> `"jean paul"`); `"  The Nile."` -> `"nile"`."""
    text = unicodedata.normalize("NFKD", text.lower().replace("\u2212", "-"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = "".join(" " if c in string.punctuation else c for c in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def score(answer: str, references: Sequence[str], question: str = "") -> dict:
    """Every score of one answer against its references.

    The kit's own, on its normalization: exact match, containment of a reference as whole
    tokens ("contains", what "right" means in the kit's figures), token F1, refusal, empty.
    Then `hedged`: a wrong answer stated with doubt; and `hallucinated`, what is left: an
    answer that is not empty, contains no reference, does not refuse and does not hedge,
    mostly wrong answers stated as facts, but also right answers the automatic check cannot
    see (a paraphrase, "JFK" for "John F. Kennedy"), so the rate is an upper bound. Last the
    official scores (official_scores) for comparison with published figures.
    """
    pred = normalize(answer)
    refs = [normalize(r) for r in references if normalize(r)]
    padded = f" {pred} "
    contains = any(f" {r} " in padded for r in refs)  # whole tokens: "c" never matches inside "cat"
    refused = bool(REFUSAL.search(answer)) and not contains
    empty = not pred
    doubt = not contains and not refused and not empty and hedged(answer)
    return {
        "exact_match": float(any(pred == r for r in refs)),
        "contains": float(contains),
        "f1": max((token_f1(pred.split(), r.split()) for r in refs), default=0.0),
        "refused": refused,
        "empty": empty,
        "hedged": doubt,
        "hallucinated": not contains and not refused and not empty and not doubt,
        **official_scores(answer, references, question),
    }


def official_scores(answer: str, references: Sequence[str], question: str = "") -> dict:
    """Exact match and F1 as the official scripts compute them, for the answer as given and for
    its extracted short answer, and lm-evaluation-harness nq_open's exact match."""
    short = extract_answer(answer, question)
    return {
        "short_answer": short,
        "em_official": exact_match(answer, references),
        "f1_official": f1(answer, references),
        "em_official_short": exact_match(short, references),
        "f1_official_short": f1(short, references),
        "em_lm_eval": lm_eval_exact_match(answer.strip(), references),
    }

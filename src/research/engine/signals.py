"""The free confidence signals of an answer, from the trace the decode loop keeps.

While it generates, the backend keeps each token's log-probability and the entropy of the
distribution it was drawn from (research.engine.llama). Here those are summed up per answer: over
all its tokens, its first token, and the tokens of the *answer proper*, the words that do not
restate the question ("The capital of Australia is **Canberra**"): a chat model's restatement is
near-certain and dilutes the mean. research.confidence turns them into a probability.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from research.qa.words import STOP_WORDS, asked, norm_word


def _words(texts: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Token indices grouped into words: a token that starts with a space or punctuation, or
    follows punctuation, starts a new word.

    `["The", " cap", "ital"]` -> [("The", [0]), (" capital", [1, 2])].
    """
    words: list[tuple[str, list[int]]] = []
    for i, t in enumerate(texts):
        starts = not words or t[:1].isspace() or not t[:1].isalnum() or not words[-1][0][-1:].isalnum()
        if starts:
            words.append((t, [i]))
        else:
            words[-1] = (words[-1][0] + t, words[-1][1] + [i])
    return words


def _first_sentence_end(texts: Sequence[str]) -> int:
    """Tokens up to the end of the first sentence (or of the answer)."""
    text = ""
    for i, t in enumerate(texts):
        text += t
        if i >= 2 and re.search(r"(?<![A-Z])[.!?]\s*$|\n", text):
            return i + 1
    return len(texts)


def token_signals(trace: Sequence[tuple[float, float]], texts: Sequence[str], question: str) -> dict | None:
    """The free signals of one answer from its tokens' (log-probability, entropy) and texts.

    `trace` and `texts` cover the answer's tokens only (not the end-of-answer token). Returns
    None for an answer with no tokens.
    """
    n = min(len(trace), len(texts))
    if n == 0:
        return None
    lp = [trace[i][0] for i in range(n)]
    ent = [trace[i][1] for i in range(n)]
    said = asked(question)
    end = _first_sentence_end(texts[:n])
    answer = [
        i
        for word, idx in _words(texts[:end])
        if (w := norm_word(word)) and w not in said and w not in STOP_WORDS
        for i in idx
    ] or list(range(end))
    return {
        "n_tokens": n,
        "mean_logprob": sum(lp) / n,
        "min_logprob": min(lp),
        "first_logprob": lp[0],
        "mean_entropy": sum(ent) / n,
        "max_entropy": max(ent),
        "answer_first_logprob": lp[answer[0]],
        "answer_mean_logprob": sum(lp[i] for i in answer) / len(answer),
        "answer_min_logprob": min(lp[i] for i in answer),
        "answer_mean_entropy": sum(ent[i] for i in answer) / len(answer),
    }

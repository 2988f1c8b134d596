"""The free confidence signals of an answer, from the trace the decode loop keeps.

While it generates, the backend keeps each token's log-probability and the entropy of the
distribution it was drawn from (research.engine.llama). Here those are summed up per answer: over
all its tokens, its first token, and the tokens of the *answer proper*, the words that do not
restate the question ("The capital of Australia is **Canberra**"): a chat model's restatement is
near-certain and dilutes the mean. One more is read from the answer's words alone: whether they hold
a word of the kind the question asks for (research.qa.words.type_match; none of the 30 answers of
the kit's three fitting sets without one was right). research.confidence turns them into a
probability.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from research.qa.words import STOP_WORDS, asked, norm_word, type_match


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


def token_signals(
    trace: Sequence[tuple[float, float]], texts: Sequence[str], question: str, shown: str | None = None
) -> dict | None:
    """The free signals of one answer from its tokens' (log-probability, entropy) and texts.

    `trace` and `texts` cover the answer's tokens only (not the end-of-answer token). `shown`:
    the answer's text as shown, which type_match reads (the tokens' texts joined where not given:
    a character split across tokens, or a stop string's first token, would make those differ
    from what research.evaluation.rescore reads again). Returns None for an answer with no tokens.
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
    } | text_signals("".join(texts[:n]) if shown is None else shown, question)


def text_signals(answer: str, question: str) -> dict:
    """The free signals an answer's words alone give, with no model: whether they hold a word of
    the kind the question asks for (research.qa.words.type_match). The engine reads them with the
    others; a record or a rating kept before one existed gains it from its answer
    (research.evaluation.rescore, research.confidence.people)."""
    return {"type_match": float(type_match(answer, question))}


#: Bytes of prompt read back from its end at most to find the question in it: the question and
#: the format's few tokens after it ("<|im_end|>\n<|im_start|>assistant\n").
_TAIL = 256


#: The longest question whose question-side signals are read: each of its tokens costs an output
#: row of logits in prompt evaluation (2-3 % of a 512-token prompt's time for 48 rows), and a
#: longer text (a pasted page, a benchmark's prompt) is no factual question of the kind the
#: calibrations saw. A factual question is 8-30 tokens; the longest of the kit's 929 is 41.
QUESTION_MAX_TOKENS = 48


def question_span(tokens: Sequence[int], question: str, piece) -> tuple[int, int] | None:
    """The prompt tokens that spell the question: (start, end) indices into `tokens`, found as the
    last occurrence of its bytes in the prompt's tail (`piece(token)` -> the token's bytes, control
    tokens empty). Tokens that straddle the question's first or last byte count. None when the
    question is not in the prompt as it was written (a template that rewrote it).

    With tokens "user", "\\n", "Who", " wrote", "?", "<end>", question "Who wrote?" -> (2, 5).
    None too for a question longer than QUESTION_MAX_TOKENS: its signals are not read.
    """
    want = question.strip().encode()
    if not want or len(want) > 64 * QUESTION_MAX_TOKENS:  # far too long to be short enough
        return None
    pieces: list[bytes] = []
    size, i = 0, len(tokens)
    while i > 0 and size < len(want) + _TAIL:
        i -= 1
        pieces.append(piece(tokens[i]))
        size += len(pieces[-1])
    pieces.reverse()
    at = b"".join(pieces).rfind(want)
    if at < 0:
        return None
    start = end = None
    pos = 0
    for k, p in enumerate(pieces):
        if start is None and pos + len(p) > at:
            start = k
        pos += len(p)
        if start is not None and pos >= at + len(want):
            end = k + 1
            break
    return (i + start, i + end) if end - start <= QUESTION_MAX_TOKENS else None


#: The question-side signals, read while the prompt is evaluated: how familiar the question's
#: words are to the model, before it writes a word (Mallen et al. 2023: small models are right
#: mostly about what is often written about).
QUESTION = (
    "q_mean_surprisal",
    "q_max_surprisal",
    "q_content_surprisal",
    "q_max_word_surprisal",
    "q_tokens_per_word",
    "q_inword_surprisal",
)


def question_signals(logprobs: Sequence[float], texts: Sequence[str]) -> dict | None:
    """The question-side signals from its tokens' log-probabilities in the prompt and their texts.

    `logprobs` may miss the question's first tokens (those whose predicting row was cached, or the
    prompt's first token): they are matched to the last texts. In nats: "q_mean_surprisal" over
    all its tokens, "q_max_surprisal" the least expected token, "q_content_surprisal" the mean over
    the tokens of its content words (not stop words), "q_max_word_surprisal" the least expected
    content word (its tokens' surprisals summed: a rare name split into pieces adds up), and
    "q_tokens_per_word" how many pieces the tokenizer cut its words into (rare words take more), and
    "q_inword_surprisal" the mean surprisal of the pieces after a content word's first: how well
    the model completes the question's own names once begun (0 when no word has a second piece).
    None without any log-probability.
    """
    n = min(len(logprobs), len(texts))
    if n == 0:
        return None
    surprisal = [-float(x) for x in logprobs[len(logprobs) - n :]]
    texts = list(texts[len(texts) - n :])
    words = [(w, idx) for w, idx in _words(texts) if norm_word(w)]
    content = [(w, idx) for w, idx in words if norm_word(w) not in STOP_WORDS] or words
    content_tokens = [i for _, idx in content for i in idx] or list(range(n))
    inword = [surprisal[i] for _, idx in content for i in idx[1:]]
    return {
        "q_mean_surprisal": sum(surprisal) / n,
        "q_max_surprisal": max(surprisal),
        "q_content_surprisal": sum(surprisal[i] for i in content_tokens) / len(content_tokens),
        "q_max_word_surprisal": max((sum(surprisal[i] for i in idx) for _, idx in content), default=0.0),
        "q_tokens_per_word": n / max(1, len(words)),
        "q_inword_surprisal": sum(inword) / len(inword) if inword else 0.0,
    }

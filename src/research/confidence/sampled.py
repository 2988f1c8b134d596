"""Confidence signals that cost more than the answer: sampled answers compared with it, and P(True).

- samples: several answers sampled at a temperature and compared with the answer given: the words
  they share with it beyond the question's (lexical agreement, the strongest signal on the kit's
  set), the share whose short answer (research.qa.scoring) is the same after normalization
  (agreement), the entropy of their clusters of equivalent short answers (discrete semantic
  entropy, Farquhar et al., Nature 2024), and how far they agree among themselves (Lin et al. 2023).
- extra pass: P(True) (Kadavath et al. 2022): the model asked whether its own proposed answer is
  true, the probability of "A" (true) against "B" read at once from one prompt evaluation.
- teacher forcing: the free signals of an answer whose signals were not kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from research.engine.signals import token_signals
from research.qa import scoring
from research.qa.words import content_words, token_f1


def same_answer(a: str, b: str) -> bool:
    """Whether two short answers say the same after SQuAD normalization: equal, or one holds the
    other as whole words ("Canberra" and "Canberra Australia"); empty answers agree with nothing."""
    x, y = scoring.squad_normalize(a), scoring.squad_normalize(b)
    if not x or not y:
        return False
    return x == y or f" {x} " in f" {y} " or f" {y} " in f" {x} "


def clusters(answers: Sequence[str]) -> list[list[int]]:
    """Answers grouped by meaning (same_answer with the cluster's first answer)."""
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        for g in groups:
            if same_answer(answers[g[0]], a):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def eigv(similarity: Sequence[Sequence[float]]) -> float:
    """U_EigV of Lin et al. 2023: the sum over the eigenvalues λ of the normalized Laplacian
    of a similarity graph of max(0, 1 - λ), a smooth count of its clusters: 1.0 when all
    answers say the same, n when n answers share nothing."""
    import numpy as np

    w = np.asarray(similarity, float)
    d = w.sum(axis=1)
    inv = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    laplacian = np.eye(len(w)) - inv[:, None] * w * inv[None, :]
    return float(np.clip(1.0 - np.linalg.eigvalsh(laplacian), 0.0, None).sum())


def agreement_signals(answer: str, samples: Sequence[str], question: str) -> dict:
    """How far `samples` agree with `answer` and with each other:

    - lexical_agreement: the mean token F1 of their content words with the answer's (the
      strongest on the kit's set; Lin et al. 2023's degree of the answer);
    - agreement: the share whose short answer is the same as the answer's;
    - semantic_entropy: the entropy of all short answers' clusters (nats);
    - sample_consistency: the mean token F1 of the samples' content words between pairs of
      samples (Lin et al.'s lexical similarity), which leaves the answer out;
    - eigv: the number of meanings among the answer and the samples (`eigv()`), over the same
      token F1, each answer similar to itself.

    `agreement_signals("Canberra.", ["Canberra", "Sydney"], "Capital of Australia?")` ->
    {"lexical_agreement": 0.5, "agreement": 0.5, "semantic_entropy": 0.637,
    "sample_consistency": 0.0, "eigv": 2.0, "n_samples": 2}.
    """
    short = scoring.extract_answer(answer, question)
    shorts = [scoring.extract_answer(s, question) for s in samples]
    words = [content_words(t, question) for t in (answer, *samples)]
    lexical = [token_f1(words[0], w) for w in words[1:]]
    agree = sum(same_answer(short, s) for s in shorts) / len(shorts) if shorts else float("nan")
    groups = clusters([short, *shorts])
    total = len(shorts) + 1
    entropy = -sum(len(g) / total * math.log(len(g) / total) for g in groups)
    n = len(words)
    sim = [[1.0 if i == j else token_f1(words[i], words[j]) for j in range(n)] for i in range(n)]
    pairs = [sim[i][j] for i in range(1, n) for j in range(i + 1, n)]
    return {
        "lexical_agreement": sum(lexical) / len(lexical) if lexical else float("nan"),
        "agreement": agree,
        "semantic_entropy": entropy,
        "sample_consistency": sum(pairs) / len(pairs) if pairs else float("nan"),
        "eigv": eigv(sim) if samples else float("nan"),
        "n_samples": len(shorts),
    }


# Signals that cost more: they need the engine again.
def sampled_signals(engine, messages, answer: str, k: int, sampling, question: str) -> dict:
    """Answer the same messages `k` more times with `sampling` (seeds 1..k) and compare.

    Returns agreement_signals(), the sampled answers ("samples", kept in the record, so that a
    signal added later can be computed from them) and the seconds it took ("samples_s").
    """
    from dataclasses import replace

    t = time.perf_counter()
    samples = [engine.answer(messages, replace(sampling, seed=i + 1))[0].strip() for i in range(k)]
    return agreement_signals(answer, samples, question) | {
        "samples": samples,
        "samples_s": time.perf_counter() - t,
    }


P_TRUE_PROMPT = (
    "Question: {question}\nProposed answer: {answer}\nIs the proposed answer:\n (A) True\n (B) False\n"
    "Answer with A or B only."
)


def p_true(engine, question: str, answer: str) -> dict:
    """P(True): the model's probability of "A" (true) over "A" or "B", asked in its own chat
    format whether its proposed answer is true (Kadavath et al. 2022), and the seconds it took."""
    t = time.perf_counter()
    prompt = P_TRUE_PROMPT.format(question=question, answer=scoring.first_sentence(answer) or answer)
    tokens = engine.prompt_tokens([{"role": "user", "content": prompt}])
    a, b = engine.backend.next_logprobs(tokens, ["A", "B"])
    return {"p_true": 1.0 / (1.0 + math.exp(b - a)), "p_true_s": time.perf_counter() - t}


def signals_for(engine, messages, answer: str) -> dict | None:
    """The free signals of a given answer, by feeding its tokens to the model one at a time
    (teacher forcing: the same computation as when it was generated), for answers whose
    signals were not kept, such as ratings from before signals existed."""
    b = engine.backend
    prompt = engine.prompt_tokens(messages)
    forced = b.tokenize(answer, special=False, bos=False)  # the answer as text, as it was generated
    trace = b.teacher_force(prompt, forced)
    texts = [b.token_bytes(t).decode("utf-8", "replace") for t in forced]
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return token_signals(trace, texts, str(question))

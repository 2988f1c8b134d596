"""How likely an answer is to be right: confidence signals, a registry of methods, and words.

Signals come in three costs:

- free: read from the model's own distribution at each token while it generates
  (research.engine.llama: log-probability of the token, entropy of the distribution), summed
  up here per answer: over all its tokens, its first token, and the tokens of the *answer
  proper*, the words that do not restate the question ("The capital of Australia is
  **Canberra**"): a chat model's restatement is near-certain and dilutes the mean.
- samples: several answers sampled at a temperature and compared with the answer given: the
  words they share with it beyond the question's (lexical agreement, the strongest signal on
  the kit's set), the share whose short answer (research.qa.scoring) is the same after
  normalization (agreement), and the entropy of their clusters of equivalent short answers
  (discrete semantic entropy, Farquhar et al., Nature 2024). Costs that many more answers.
- extra pass: P(True) (Kadavath et al. 2022): the model asked whether its own proposed answer
  is true, the probability of "A" (true) against "B" read at once from one prompt evaluation.

A method names the signals it reads; a calibration (research.confidence.calibration) maps them to the
probability that the answer is right. `describe(p)` puts that probability into words for the
page and the terminal.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from research.qa import scoring

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


METHODS: dict[str, Method] = {}


def register_method(name: str, signals: Sequence[str], cost: str, help: str) -> Method:
    """Register a confidence method (as prompts.register_format registers chat formats)."""
    METHODS[name] = Method(name, tuple(signals), cost, help)
    return METHODS[name]


register_method("mean_logprob", ["mean_logprob"], "free", "mean log-probability of the answer's tokens")
register_method("first_token", ["first_logprob"], "free", "log-probability of the answer's first token")
register_method(
    "answer_logprob",
    ["answer_mean_logprob"],
    "free",
    "mean log-probability of the words that do not restate the question",
)
register_method("entropy", ["mean_entropy"], "free", "mean entropy of the distributions the tokens came from")
register_method("free", FREE, "free", "all free signals in one logistic model")
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


# Free signals: from the per-token trace the backend keeps while it generates.
_STOPWORDS = frozenset(
    "the a an of in on at to is was are were be been by for with and or as from that this which who "
    "what when where it its his her their he she they".split()
)
_ALNUM = re.compile(r"[^\W_]+", re.U)


def _norm_word(text: str) -> str:
    return "".join(_ALNUM.findall(text.lower()))


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
    asked = {_norm_word(w) for w in _ALNUM.findall(question)}
    end = _first_sentence_end(texts[:n])
    answer = [
        i
        for word, idx in _words(texts[:end])
        if (w := _norm_word(word)) and w not in asked and w not in _STOPWORDS
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


# Sampled signals.
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


def content_words(text: str, question: str) -> list[str]:
    """The normalized words of the first sentence that neither restate the question nor are
    stopwords: `("The capital of Australia is Canberra.", "What is the capital of Australia?")`
    -> ["canberra"]."""
    asked = {_norm_word(w) for w in _ALNUM.findall(question)}
    words = (_norm_word(w) for w in _ALNUM.findall(scoring.first_sentence(text)))
    return [w for w in words if w and w not in asked and w not in _STOPWORDS]


def _f1(a: Sequence[str], b: Sequence[str]) -> float:
    from collections import Counter

    same = sum((Counter(a) & Counter(b)).values())
    return 0.0 if same == 0 else 2 * same / (len(a) + len(b))


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
    lexical = [_f1(words[0], w) for w in words[1:]]
    agree = sum(same_answer(short, s) for s in shorts) / len(shorts) if shorts else float("nan")
    groups = clusters([short, *shorts])
    total = len(shorts) + 1
    entropy = -sum(len(g) / total * math.log(len(g) / total) for g in groups)
    n = len(words)
    sim = [[1.0 if i == j else _f1(words[i], words[j]) for j in range(n)] for i in range(n)]
    pairs = [sim[i][j] for i in range(1, n) for j in range(i + 1, n)]
    return {
        "lexical_agreement": sum(lexical) / len(lexical) if lexical else float("nan"),
        "agreement": agree,
        "semantic_entropy": entropy,
        "sample_consistency": sum(pairs) / len(pairs) if pairs else float("nan"),
        "eigv": eigv(sim) if samples else float("nan"),
        "n_samples": len(shorts),
    }


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


def describe(p: float | None) -> tuple[str, float | None]:
    """Words and number for a calibrated confidence: `describe(0.82)` -> ("likely right", 0.82).

    None (no calibration for this model yet) -> ("not calibrated", None).
    """
    if p is None or math.isnan(p):
        return "not calibrated", None
    return next(words for bound, words in BANDS if p >= bound), p


def label(p: float | None) -> str:
    """One phrase for the page and the terminal: `label(0.82)` -> "likely right, 82 %",
    `label(0.3)` -> "unsure, check this: 30 %"."""
    words, value = describe(p)
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

    def as_dict(self) -> dict:
        return {
            "confidence": self.p,
            "confidence_method": self.method,
            "calibration": self.calibration,
            "confidence_words": self.words,
        }

    def abstains(self, below: float | None) -> bool:
        """Whether "answer only when sure" withholds this answer (below the threshold; an
        uncalibrated answer is never withheld: there is no number to judge it by)."""
        return below is not None and self.p is not None and self.p < below


def of_signals(signals: dict | None, model_sha256: str, method: str = DEFAULT) -> Confidence:
    """The calibrated confidence of an answer with these signals, from the saved calibration of
    this model file and method (research.confidence.calibration.load); uncalibrated when there is none."""
    from research.confidence import calibration

    cal = calibration.load(model_sha256, method) if model_sha256 else None
    p = cal.probability(signals) if cal is not None and signals else None
    bad = cal is None and model_sha256 and calibration.damaged(model_sha256, method)
    words = DAMAGED if bad else label(p)
    return Confidence(p, method, cal.id if cal is not None and p is not None else None, words)


def of_stats(stats, model_sha256: str, method: str = DEFAULT) -> Confidence:
    """The calibrated confidence of an answer just streamed, from its Stats (the page calls this
    with `engine.sha256`); free methods only, as only those are in the Stats."""
    return of_signals(getattr(stats, "signals", None), model_sha256, method)


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


# People's verdicts: recalibration and disagreement.
def rating_label(rating: dict) -> float | None:
    """Right (1) or not (0) by a person's rating: the verdict first, then thumbs, then a score of
    4-5 or 1-2; None when it says neither ("partly correct", a score of 3, an A/B choice)."""
    verdict = rating.get("verdict")
    if verdict == "correct":
        return 1.0
    if verdict in ("wrong", "hallucinated", "refused"):
        return 0.0
    if verdict is not None:
        return None
    if rating.get("thumbs") in ("up", "down"):
        return 1.0 if rating["thumbs"] == "up" else 0.0
    score = rating.get("score")
    return None if score is None or score == 3 else float(score >= 4)


def rated_signals(engine, ratings: Sequence[dict]) -> tuple[list[dict], list[dict], int]:
    """The ratings of this engine's model file that say right or wrong, the latest per answer,
    with each answer's free signals: kept with the rating (`confidence_signals`) or recomputed
    by teacher forcing. Answers written from a library's passages are left out: their signals
    come from another prompt than the closed-book answers the calibration is for. Returns
    (ratings, signals, how many were recomputed)."""
    latest: dict = {}
    for r in ratings:
        if (
            r.get("model_sha256") == engine.sha256
            and not (r.get("library") or {}).get("looked_up")
            and str(r.get("answer") or "").strip()
            and rating_label(r) is not None
        ):
            latest[r.get("answer_id") or r.get("id")] = r
    kept, signals, forced = [], [], 0
    for r in latest.values():
        got = r.get("confidence_signals")
        if not got:
            messages = ([{"role": "system", "content": r["system"]}] if r.get("system") else []) + [
                {"role": "user", "content": r["question"]}
            ]
            got, forced = signals_for(engine, messages, r["answer"]), forced + 1
        if got:
            kept.append(r)
            signals.append(got)
    return kept, signals, forced


def recalibrate(engine, ratings: Sequence[dict], method: str = DEFAULT, root=None):
    """Fit `method` (a free one) to a person's ratings of this model and save it as their
    calibration of this model file. Returns (calibration, path, answers recomputed)."""
    from research.confidence import calibration
    from research.errors import KitError

    names = METHODS[method].signals
    if not set(names) <= set(FREE):
        raise KitError(f"ratings keep only the free signals; {method!r} needs {', '.join(names)}")
    kept, signals, forced = rated_signals(engine, ratings)
    X = [[sig[k] for k in names] for sig in signals]
    y = [rating_label(r) for r in kept]
    fitted_on = {
        "source": "ratings",
        "label": "a person's verdict, thumbs or score",
        "rating_ids": [r.get("id") for r in kept],
        "question_ids": [r.get("question_id") for r in kept if r.get("question_id")],
    }
    cal = calibration.fit(method, names, X, y, engine.sha256, fitted_on)
    return cal, calibration.save(cal, root), forced


def disagreements(ratings: Sequence[dict], signals: Sequence[dict], cal) -> list[dict]:
    """Rated answers where the calibrated confidence and the person disagree: confident (50 % or
    more) and judged wrong, or doubtful and judged right; the most confident mistakes first."""
    out = []
    for r, sig in zip(ratings, signals, strict=True):
        p, right = cal.probability(sig), rating_label(r)
        if p is not None and right is not None and (p >= 0.5) != bool(right):
            out.append(
                {
                    "question": r["question"],
                    "answer": r["answer"],
                    "p": p,
                    "person": r.get("verdict") or r.get("thumbs"),
                }
            )
    return sorted(out, key=lambda d: -abs(d["p"] - 0.5))


def signal_cost(model, config, questions: Sequence[str], max_tokens: int = 64, rounds: int = 2) -> dict:
    """What the free signals cost: the same greedy answers decoded with them on and off, side by
    side in one process (alternating which goes first), so both see the same machine load.

    Each answer is `max_tokens` tokens long (the end-of-answer token ignored) after a reset cache.
    Returns the decode seconds and tokens of each, the overhead (on / off - 1), and the seconds
    the signals' own timer counted.
    """
    from dataclasses import replace

    from research.engine.engine import Engine, Sampling, conversation

    engines = {k: Engine.load(model, replace(config, token_signals=k == "on")) for k in ("on", "off")}
    sampling = Sampling(temperature=0, max_tokens=max_tokens, ignore_eos=True, seed=0)
    spent = {k: {"decode_s": 0.0, "tokens": 0, "signal_s": 0.0} for k in engines}
    for r in range(rounds):
        for i, q in enumerate(questions):
            for k in ("on", "off") if (r + i) % 2 == 0 else ("off", "on"):
                engines[k].reset()
                _, s = engines[k].answer(conversation(q), sampling)
                spent[k]["decode_s"] += s.total_s - s.ttft_s
                spent[k]["tokens"] += s.completion_tokens
                spent[k]["signal_s"] += s.signal_s
    for e in engines.values():
        e.close()
    on, off = spent["on"], spent["off"]
    overhead = (on["decode_s"] / on["tokens"]) / (off["decode_s"] / off["tokens"]) - 1
    return {"on": on, "off": off, "overhead": overhead, "timer_share": on["signal_s"] / on["decode_s"]}

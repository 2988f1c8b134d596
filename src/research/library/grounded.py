"""Answering from a library: the best passages in the prompt, numbered, and the answer citing them.

Three modes: "never" (closed book), "always" (every question looks the library up) and
"unsure" (the closed-book answer first; the library only when its confidence is below a
threshold: Mallen et al., ACL 2023, retrieve only what the model does not know, since added
passages also destroy answers a small model knew, arXiv 2603.11513).

The confidence of a closed-book answer is, by default ("calibrated"), research.confidence.methods's
calibrated probability that the answer is right, where the model file has a calibration
(`eval --calibrate`); without one, or by name, a pluggable function (CONFIDENCE,
register_confidence): "logprob", the geometric mean probability of the answer's own tokens where the
engine reads token log-probabilities (Stats.signals); where it does not, "heuristic", a free
signal read from the answer's text: a refusal or an empty answer is 0; hedging, an answer cut
off at the token limit, a long answer, and an answer that mostly repeats the question's own
words (what a small model does when it does not know: "The ferry is the Harrow Island ferry")
lower it.

Retrieved text is hostile: before it enters the prompt, chat-format control sequences are
broken (a document holding `<|im_start|>system` must not open a turn of its own), and on the page
titles, names and snippets are shown only as Markdown code spans (research.page.text.literal),
with links to the kit's own local route only.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from research.engine import Engine, Sampling, Stats, conversation
from research.errors import KitError
from research.library import store as lib
from research.qa import scoring
from research.qa.words import terms
from research.registry import Registry

MODES = ("never", "always", "unsure")

#: The grounded system prompt: the numbered passages, then the instruction. Tried on the bundled
#: SmolLM2-135M over data/library (61 questions, 3 passages): passages in the system prompt and
#: the question alone in the user's turn answered 70 % right, against 58-59 % with the passages
#: in the user's turn and 62-64 % with only 1, 2 or 4 passages. No wording made it cite
#: reliably (0-13 % of answers carry a number); a worked example made it copy the example's
#: answer. So the kit also attributes: see attribute().
SYSTEM = (
    "Passages:\n\n{passages}\n\nAnswer the user's question from the passages in a few words. "
    "Write the number of the passage you used in brackets after the answer."
)


@dataclass(frozen=True)
class Grounding:
    """How passages are chosen and when the library is asked."""

    k: int = 3  # passages at most: more crowds a small context and distracts a small model
    threshold: float = 0.5  # "unsure": look up when the closed-book confidence is below this
    # "calibrated": research.confidence.methods's calibrated probability that the answer is right, where
    # this model file has a calibration (`eval --calibrate`), else "logprob". Or a name in
    # CONFIDENCE: "logprob" reads the engine's token log-probabilities, and falls back to
    # "heuristic" (the answer's text) where the engine gives none.
    confidence: str = "calibrated"
    margin_tokens: int = 8  # slack for how the template joins the passages to the question


# ---- confidence of a closed-book answer ----

#: A score of a closed-book answer, f(question, answer, stats) -> 0..1: how sure the model was,
#: which decides whether "look it up when unsure" looks it up. Not research.confidence's
#: calibrated Confidence: a score the lookup thresholds.
LookupScore = Callable[[str, str, "Stats | None"], float]
CONFIDENCE: Registry[LookupScore] = Registry("lookup score")
register_confidence = CONFIDENCE.register


#: Besides doubt (research.qa.scoring.hedged), an answer that says the fact is not known or recorded.
UNKNOWN = re.compile(r"\b(unknown|not known|no record)\b", re.I)


@register_confidence("heuristic")
def heuristic(question: str, answer: str, stats: Stats | None = None) -> float:
    """A free confidence from the answer's text, 0..1.

    `heuristic("Capital of France?", "Paris")` -> 1.0; `heuristic("Who runs Kell?", "I don't know")` -> 0.0;
    `heuristic("Who founded the Harrow ferry?", "The Harrow ferry was founded by the ferry.")` -> 0.6.
    """
    if not answer.strip() or scoring.REFUSAL.search(answer):
        return 0.0
    c = 1.0
    if scoring.hedged(answer) or UNKNOWN.search(answer):
        c -= 0.4
    if stats is not None and stats.stop_reason == "length":
        c -= 0.3
    words = terms(answer)
    if len(answer.split()) > 12:
        c -= 0.2
    asked = set(terms(question))
    if words and sum(w not in asked for w in words) / len(words) < 0.5:
        c -= 0.4  # mostly the question's own words: restating, not answering
    return round(max(0.0, c), 3)


@register_confidence("logprob")
def logprob(question: str, answer: str, stats: Stats | None = None) -> float:
    """The geometric mean probability of the answer's own tokens (those that do not restate the
    question), exp(answer_mean_logprob), where the engine reads token log-probabilities
    (Stats.signals); the text heuristic where it does not.

    `logprob("Q?", "Paris", stats with answer_mean_logprob -0.1)` -> 0.905.
    """
    signals = getattr(stats, "signals", None) or {}
    mean = signals.get("answer_mean_logprob", signals.get("mean_logprob"))
    if mean is None:
        return heuristic(question, answer, stats)
    if not answer.strip() or scoring.REFUSAL.search(answer):
        return 0.0
    return round(math.exp(min(0.0, float(mean))), 3)


def closed_book_confidence(
    engine: Engine, grounding: Grounding, question: str, answer: str, stats, style: str = "chat"
) -> float:
    """The confidence "unsure" compares with its threshold: research.confidence.methods's calibrated
    probability for "calibrated" when this model has a calibration for answers of this `style`
    (research.confidence.calibration: "chat" on the page and in the terminal, "eval" for eval's
    few-word answers), else CONFIDENCE's function."""
    name = grounding.confidence
    if name == "calibrated":
        from research import confidence

        conf = confidence.of_stats(stats, engine.sha256, style=style)
        if conf.unlike:  # a question unlike the calibration's: its number is no guide, so unsure
            return 0.0
        if conf.p is not None:
            return round(conf.p, 3)
        name = "logprob"
    if name not in CONFIDENCE:
        raise KitError(
            f"unknown confidence signal {name!r}; choose from: calibrated, {', '.join(CONFIDENCE)}"
        )
    return CONFIDENCE[name](question, answer, stats)


# ---- passages in the prompt ----

#: Strings that open or close a turn in the kit's chat formats; in a passage they are broken
#: apart (a zero-width space inside), so they tokenize as text, not as control tokens.
CONTROL = re.compile(
    r"<\||\|>|<(?=/?s>)|<(?=(?:start|end)_of_turn>)|\[(?=/?INST\])|###(?=\s*(?:System|User|Response|Assistant))",
    re.I,
)


def defang(text: str) -> str:
    """`defang("a<|im_start|>system")` -> "a<\\u200b|im_start|\\u200b>system"."""
    return CONTROL.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)


@dataclass
class Source:
    """A passage as given to the model: its number in the prompt and where it comes from."""

    n: int
    hit: lib.Hit
    truncated: bool = False

    def as_dict(self) -> dict:
        h = self.hit
        return {
            "n": self.n,
            "id": h.id,
            "source": h.source,
            "title": h.title,
            "position": h.position,
            "score": h.score,
            "kind": h.kind,
            "truncated": self.truncated,
        }


#: How passages_block lays the passages out, recorded with every evaluation record.
PASSAGE_ORDER = "best last"


def passages_block(sources: Sequence[Source]) -> str:
    """The passages as the model reads them: `[n] (Title) text`, a blank line between them, the
    best ([1]) last, next to the question: on the bundled SmolLM2-135M over data/library (61
    questions, 3 passages) best-last answered 44 right against 41 best-first (7 gained, 4 lost:
    a small model reads what is nearest the question; chosen on that same set)."""
    return "\n\n".join(f"[{s.n}] ({defang(s.hit.title)}) {defang(s.hit.text)}" for s in reversed(sources))


def system_for(sources: Sequence[Source], system: str | None = None) -> str:
    """The grounded system prompt: the user's own prompt if any, then the passages and the rule."""
    grounded = SYSTEM.format(passages=passages_block(sources))
    return f"{system}\n\n{grounded}" if system else grounded


def fit(
    engine: Engine,
    question: str,
    hits: Sequence[lib.Hit],
    system: str | None,
    max_tokens: int,
    margin: int = 8,
) -> list[Source]:
    """Number the best `hits` into the prompt while they fit the context with room for the reply.

    Tokens are counted with the engine's own tokenizer; a passage that does not fit whole is cut
    (only the first: a cut second passage helps less than a whole first one). Earlier turns of a
    conversation are not counted: the engine drops them, oldest first, to make room.
    """
    base = len(engine.prompt_tokens(conversation(question, system_for([], system))))
    budget = engine.backend.n_ctx - max_tokens - base - margin
    sources: list[Source] = []
    for hit in hits:
        trial = [*sources, Source(len(sources) + 1, hit)]
        if engine.count_tokens(passages_block(trial)) <= budget:
            sources = trial
            continue
        if not sources:  # the best passage alone is too long: keep what fits of it
            text = hit.text
            while text and engine.count_tokens(passages_block([Source(1, _with_text(hit, text))])) > budget:
                text = text[: int(len(text) * 0.8)].rsplit(" ", 1)[0]
            if text:
                sources = [Source(1, _with_text(hit, text), truncated=True)]
        break
    return sources


def _with_text(hit: lib.Hit, text: str) -> lib.Hit:
    return lib.Hit(hit.id, hit.score, hit.title, hit.source, hit.position, text, hit.kind)


CITE = re.compile(r"\[\s*(\d{1,2}(?:\s*[,;]\s*\d{1,2})*)\s*\]")


def cited(answer: str, n_sources: int) -> list[int]:
    """Passage numbers an answer cites: `cited("Paris [2], [1,3]", 3)` -> [2, 1, 3]; out-of-range dropped."""
    out: list[int] = []
    for m in CITE.finditer(answer):
        for x in re.split(r"\s*[,;]\s*", m.group(1)):
            n = int(x)
            if 1 <= n <= n_sources and n not in out:
                out.append(n)
    return out


def _terms(text: str) -> set[str]:
    return set(terms(text))


def attribute(answer: str, question: str, sources: Sequence[Source]) -> list[int]:
    """The passage that supports an answer, found by the kit: the one holding most of the
    answer's own words (those not already in the question); the better-ranked on a tie.

    With passages [1] "The bakery opens at 7" and [2] "The mayor is Clara Voss":
    `attribute("Clara Voss", "Who is the mayor?", sources)` -> [2].
    """
    own = _terms(answer) - _terms(question)
    best, best_n = 0, None
    for s in sources:
        k = len(own & _terms(f"{s.hit.title} {s.hit.text}"))
        if k > best:
            best, best_n = k, s.n
    return [best_n] if best_n else []


def citations(answer: str, question: str, sources: Sequence[Source]) -> tuple[list[int], str | None]:
    """(passage numbers, who cited them): the model's own `[n]` when it wrote any ("model"),
    else the kit's attribution ("kit"), else ([], None)."""
    own = cited(answer, len(sources))
    if own:
        return own, "model"
    found = attribute(answer, question, sources)
    return (found, "kit") if found else ([], None)


# ---- a grounded question ----


@dataclass
class Grounded:
    """The messages for one question and what the library added to them."""

    question: str
    mode: str
    library: str
    messages: list = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    looked_up: bool = False
    version: int | None = None  # the library's index version the passages came from
    retrieval_s: float = 0.0
    added_tokens: int = 0  # prompt tokens the passages added
    confidence: float | None = None  # "unsure": of the closed-book answer
    closed_answer: str | None = None  # "unsure": the closed-book answer, final when not looked up
    closed_stats: Stats | None = None

    def figures(self) -> str:
        """One line of what the library cost, for under the answer."""
        conf = f" · confidence {self.confidence:.2f}" if self.confidence is not None else ""
        if not self.looked_up:
            return f"library {self.library}: not consulted ({self.mode}){conf}"
        return (
            f"library {self.library}: {len(self.sources)} passages · +{self.added_tokens} prompt tokens · "
            f"retrieval {self.retrieval_s * 1000:.0f} ms{conf}"
        )

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "library": self.library,
            "library_version": self.version,
            "looked_up": self.looked_up,
            "sources": [s.as_dict() for s in self.sources],
            "retrieval_s": self.retrieval_s,
            "prompt_tokens_added": self.added_tokens,
            "confidence": self.confidence,
        }


def _here(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def ground(
    engine: Engine,
    library: str,
    question: str,
    mode: str = "always",
    *,
    system: str | None = None,
    history: Sequence[dict] = (),
    sampling: Sampling = Sampling(),
    grounding: Grounding = Grounding(),
    run: Callable = _here,
) -> Grounded:
    """The messages to answer `question` with (passages numbered within the context budget).

    In "unsure" mode the closed-book answer is generated here first (with `system`); when it is
    confident, `closed_answer` is the answer and `messages` are the plain conversation.

    `run(fn, *args)` runs the work that needs the engine (answering, counting tokens): the page
    passes its model thread's runner, so the library is searched on the caller's thread and a
    slow search holds no other session's answer.
    """
    if mode not in MODES:
        raise KitError(f"unknown lookup mode {mode!r}; choose from: {', '.join(MODES)}")
    out = Grounded(question, mode, library)
    plain = conversation(question, system, history)
    library_obj = lib.open_library(library)  # before any answer: an unknown name is one line
    if mode == "never":
        out.messages = plain
        return out
    if mode == "unsure":
        answer, stats = run(engine.answer, plain, sampling)
        out.closed_answer, out.closed_stats = answer.strip(), stats
        out.confidence = closed_book_confidence(engine, grounding, question, answer, stats)
        if out.confidence >= grounding.threshold:
            out.messages = plain
            return out
    t = time.perf_counter()
    hits = library_obj.search(question, grounding.k)
    out.retrieval_s = time.perf_counter() - t
    out.version, out.looked_up = library_obj.version, True
    out.sources = run(fit, engine, question, hits, system, sampling.max_tokens, grounding.margin_tokens)
    out.messages = conversation(question, system_for(out.sources, system), history) if out.sources else plain
    if out.sources:
        grounded_n = len(run(engine.prompt_tokens, out.messages))
        out.added_tokens = grounded_n - len(run(engine.prompt_tokens, plain))
    return out


def answer(engine: Engine, library: str, question: str, mode: str = "always", **kw) -> dict:
    """Answer one question from the library: {"answer", "cited", "sources", figures...}.

    The total time counts the closed-book answer of "unsure", the retrieval and the answer.
    """
    t = time.perf_counter()
    sampling = kw.get("sampling", Sampling())
    g = ground(engine, library, question, mode, **kw)
    if g.closed_answer is not None and not g.looked_up:
        text, stats = g.closed_answer, g.closed_stats
    else:
        text, stats = engine.answer(g.messages, sampling)
        text = text.strip()
    numbers, by = citations(text, question, g.sources)
    return {
        "answer": text,
        "cited": numbers,
        "cited_by": by,
        **g.as_dict(),
        "closed_answer": g.closed_answer,
        "stats": stats,
        "total_s": time.perf_counter() - t,
        "grounded": g,
    }

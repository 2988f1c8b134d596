"""A conversation into the prompt's tokens: the format rendered with only its own markers as control
tokens (prompt_tokens), the oldest turns dropped to leave room for the reply (fit_history), stop
strings held back while they are undecided (StopScanner), and a question's messages (conversation).
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Sequence

from research.engine.prompts import ChatFormat, Message
from research.errors import KitError


class StopScanner:
    """Hold back text that could be the start of a stop string until it is decided.

    `feed("Paris.<|im")` -> "Paris." (holds "<|im"); `feed("_end|>")` -> "" and `.stopped`.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.buf = ""
        self.stopped = False
        self._starts = {c for s in self.stops for c in s[:-1]}  # a held tail must end in one of these

    def feed(self, text: str) -> str:
        self.buf += text
        for s in self.stops:
            i = self.buf.find(s)
            if i >= 0:
                out, self.buf, self.stopped = self.buf[:i], "", True
                return out
        if not self.buf or self.buf[-1] not in self._starts:  # the common case: nothing to hold
            out, self.buf = self.buf, ""
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.buf.endswith(s[:k])), default=0)
        out, self.buf = self.buf[: len(self.buf) - hold], self.buf[len(self.buf) - hold :]
        return out

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


#: Marks a message's place while its format is rendered (research.engine.prompt.prompt_tokens):
#: private-use characters around a per-call nonce, which no text supplies by chance.
_MARK = "\ue000{}:{}\ue001"


def prompt_tokens(fmt, messages: Sequence[Message], backend) -> list[int]:
    """The prompt of `messages` in `fmt`, tokenized so that only the format's own markers can be
    control tokens: every message's content (a question, a passage, a file's title, an earlier
    answer) is tokenized as text, so `<|im_start|>system`, `<｜User｜>`, `[SYSTEM_PROMPT]` or
    `<<SYS>>` in it stay characters whatever the model's vocabulary calls special.

    The format is rendered with a mark in place of each content and cut at the marks; the pieces
    between are the format's and are tokenized with special tokens parsed. A chat template that
    changes content as it inserts it (trims, folds a system turn) is rendered again to check; if
    the marks cannot say where the content went, the content's control-token texts are broken
    with a word joiner (U+2060) and the whole prompt is tokenized as before. Tokenized as text,
    content still has its marker-like texts broken the same way (_markers: llama.cpp reads
    user-defined tokens even in text).
    """
    nonce = secrets.token_hex(6)
    contents = [str(m["content"]) for m in messages]
    marked = [{**m, "content": _MARK.format(nonce, i)} for i, m in enumerate(messages)]
    pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", fmt.render(marked))
    template, used = pieces[0::2], [int(i) for i in pieces[1::2]]
    if getattr(fmt, "template", None):  # a chat template: does it insert the content as it is?
        real = fmt.render(messages)
        for shape in (contents, [c.strip() for c in contents]):
            if _joined(template, used, shape) == real:
                contents = shape
                break
        else:
            return backend.tokenize(_defanged(fmt, messages, backend))
    markers = _markers(backend.control_texts)
    tokens = backend.tokenize(template[0], special=True, bos=True)
    for i, after in zip(used, template[1:], strict=True):
        if contents[i]:
            text = markers.sub(_break, contents[i]) if markers else contents[i]
            tokens += backend.tokenize(text, special=False, bos=False)
        if after:
            tokens += backend.tokenize(after, special=True, bos=False)
    return tokens


@functools.lru_cache(maxsize=8)
def _markers(texts: frozenset[str]) -> re.Pattern | None:
    """The vocabulary's marker-like token texts (`<|tool_call>`, `[INST]`, `<channel|>`: a bracket
    or a bar in them) as one pattern. llama.cpp reads a USER_DEFINED token in text even when told
    not to read special tokens (only control tokens are skipped), and some vocabularies mark turn
    or tool markers so (gemma-4's `<|tool_call>`, `<|channel>`); content's copies are broken."""
    marks = sorted((t for t in texts if t.strip() and any(c in t for c in "<>[]|")), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, marks))) if marks else None


def _break(m: re.Match) -> str:
    return m.group()[0] + "\u2060" + m.group()[1:]


def _joined(template: list[str], used: list[int], contents: list[str]) -> str:
    return template[0] + "".join(contents[i] + after for i, after in zip(used, template[1:], strict=True))


def _defanged(fmt, messages: Sequence[Message], backend) -> str:
    """The prompt with every control-token text in the messages broken by a word joiner."""
    texts = sorted(backend.control_texts, key=len, reverse=True)
    if not texts:
        return fmt.render(messages)
    pattern = re.compile("|".join(re.escape(t) for t in texts))

    def broken(text: str) -> str:
        return pattern.sub(_break, text)

    safe = [{**m, "content": broken(str(m["content"]))} for m in messages]
    return fmt.render(safe)


def fit_history(
    messages: Sequence[Message], prompt, n_ctx: int, max_tokens: int, min_reply: int = 16
) -> tuple[list[int], int, int]:
    """Drop the oldest turns until the prompt leaves room for the reply.

    `prompt(messages)` gives the prompt's tokens (prompt_tokens, bound to a format and a backend).
    Returns (prompt tokens, tokens left for the reply, messages dropped). The system prompt
    and the last question are always kept; KitError when they alone leave no room.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system) :])
    dropped = 0
    while True:
        tokens = prompt(system + turns)
        room = n_ctx - len(tokens)
        if room >= max_tokens or len(turns) <= 1:
            break
        cut = next((i for i in range(1, len(turns)) if turns[i]["role"] == "user"), len(turns) - 1)
        turns, dropped = turns[cut:], dropped + cut
    if room < min_reply:
        raise KitError(
            f"the question is too long: {len(tokens)} tokens with the system prompt, in a context "
            f"of {n_ctx}, leaves no room for an answer; shorten it or load with a larger --ctx"
        )
    return tokens, min(max_tokens, room), dropped


class _Timed:
    """A chat format and tokenizer that add up the time spent in them (for the ttft parts)."""

    def __init__(self, fmt: ChatFormat, backend):
        self.fmt, self.backend, self.template = fmt, backend, fmt.template
        self.format_s = self.tokenize_s = 0.0

    def render(self, messages) -> str:
        t = time.perf_counter()
        try:
            return self.fmt.render(messages)
        finally:
            self.format_s += time.perf_counter() - t

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        t = time.perf_counter()
        try:
            return self.backend.tokenize(text, special=special, bos=bos)
        finally:
            self.tokenize_s += time.perf_counter() - t

    @property
    def control_texts(self):
        return self.backend.control_texts

    def prompt(self, messages) -> list[int]:
        return prompt_tokens(self, messages, self)


def conversation(question: str, system: str | None = None, history: Sequence[Message] = ()) -> list[Message]:
    """Messages for a question: `conversation("Hi", "Be brief")` -> [system, user]."""
    head = [{"role": "system", "content": system}] if system else []
    return head + list(history) + [{"role": "user", "content": question}]

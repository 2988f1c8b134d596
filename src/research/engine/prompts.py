"""Chat formats: the GGUF's own template (sandboxed, bounded) and named formats for files without one.

A chat template inside a GGUF is code written by whoever made the file. It is rendered only
in Jinja2's ImmutableSandboxedEnvironment (CVE-2024-34359 was llama-cpp-python rendering it
unsandboxed), and a template that reaches for Python internals is refused, not run. The
sandbox does not bound work, so templates render in a child process (research.engine.templates)
that is stopped past WALL_S seconds (3; renders back to back, as when fit_history trims a long
conversation, share them), MEMORY_MB of address space (256) or OUTPUT_CHARS of output (1 Mi
characters beyond twice the conversation's text): the template is then refused in one line
(TemplateLimitError), at load and on any later question. A template that passed at
load and goes past a bound later switches its ChatFormat to the fallback format for good (the
catalog's format for the file, else chatml); the question is answered in that format and
`ChatFormat.warning` says why. The named formats are the kit's own code and render in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from research.engine import templates as template_worker
from research.engine.templates import WALL_S, TemplateLimitError
from research.errors import KitError
from research.registry import Registry

#: Template renders less than this many seconds apart count as one burst (one question's
#: renders in fit_history come milliseconds apart), sharing one WALL_S budget.
BURST_GAP_S = 1.0

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}

#: Named formats: name -> function(messages) -> prompt ending where the assistant speaks.
FORMATS: Registry[Callable[[Sequence[Message]], str]] = Registry("chat format")
#: Strings that end an answer in each named format, besides the model's end-of-generation token.
STOPS: dict[str, tuple[str, ...]] = {}

#: The system prompt of Orca-Mini's model card, which the paper used.
ORCA_SYSTEM = "You are an AI assistant that follows instruction extremely well. Help as much as you can."


def register_format(name: str, stops: tuple[str, ...] = ()):
    """Register a named chat format (llama-cpp-python's register_chat_format, kept small)."""

    def wrap(fn):
        STOPS[name] = stops
        return FORMATS.register(name)(fn)

    return wrap


@register_format("chatml", stops=("<|im_end|>",))
def chatml(messages: Sequence[Message]) -> str:
    """ChatML: `[{"role": "user", "content": "Hi"}]` ->
    `<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n`."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


@register_format("orca-mini", stops=("### User:", "### System:", "\n###"))
def orca_mini(messages: Sequence[Message]) -> str:
    """The Orca-Mini format of the paper: `### System:` / `### User:` / `### Response:` sections."""
    headers = {"system": "### System:", "user": "### User:", "assistant": "### Response:"}
    parts = [f"{headers[m['role']]}\n{m['content']}\n\n" for m in messages]
    return "".join(parts) + "### Response:\n"


@register_format("llama3", stops=("<|eot_id|>",))
def llama3(messages: Sequence[Message]) -> str:
    """Llama 3.x instruct format."""
    parts = [f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages]
    return "<|begin_of_text|>" + "".join(parts) + "<|start_header_id|>assistant<|end_header_id|>\n\n"


@register_format("phi3", stops=("<|end|>",))
def phi3(messages: Sequence[Message]) -> str:
    """Phi-3 / Phi-3.5 format."""
    parts = [f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


@register_format("gemma", stops=("<end_of_turn>",))
def gemma(messages: Sequence[Message]) -> str:
    """Gemma format: no system role, so a system prompt is put before the first user turn."""
    system = "".join(m["content"] + "\n\n" for m in messages if m["role"] == "system")
    parts = []
    for m in (m for m in messages if m["role"] != "system"):
        role = "model" if m["role"] == "assistant" else "user"
        content = system + m["content"] if role == "user" and system else m["content"]
        system = "" if role == "user" else system
        parts.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return "<bos>" + "".join(parts) + "<start_of_turn>model\n"


@register_format("qa", stops=("\nQ:", "\n\n"))
def qa(messages: Sequence[Message]) -> str:
    """Question-answer completion for base models, which have no chat turns and, sent a chat
    format, continue the text (they repeat the question): `[user "Capital of France?"]` ->
    `"Q: Capital of France?\\nA:"`; a system prompt goes first as a line of its own, earlier
    turns as answered pairs."""
    parts = []
    for m in messages:
        text = str(m["content"]).strip()
        if m["role"] == "system":
            parts.append(f"{text}\n\n")
        elif m["role"] == "user":
            parts.append(f"Q: {text}\nA:")
        else:
            parts.append(f" {text}\n\n")
    return "".join(parts)


#: lm-evaluation-harness's nq_open task (lm_eval/tasks/nq_open/nq_open.yaml, version 4): its
#: description, "Q: {{question}}?\nA:" per question, " " before a target, "\n" between examples,
#: and generation until "\n", "." or ",".
NQ_OPEN_DESCRIPTION = "Answer these questions:\n\n"
NQ_OPEN_STOPS = ("\n", ".", ",")


def nq_question(question: str) -> str:
    """nq_open's "{{question}}?": NQ questions carry no mark, so it adds one; a question that
    already ends in one keeps it alone. `"who wrote hamlet"` -> `"Q: who wrote hamlet?\\nA:"`."""
    return f"Q: {question.strip().removesuffix('?')}?\nA:"


def load_shots(path: str | None = None) -> list[tuple[str, str]]:
    """Example (question, answer) pairs for fewshot_format from a JSONL file with question and
    answer fields (an answer list gives its first, as lm-evaluation-harness does); default: the
    kit's eight (data/fewshot/questions.jsonl), written for it and in none of its question sets."""
    import json
    from pathlib import Path

    from research import paths

    path = Path(path) if path else paths.kit_data_dir() / "fewshot" / "questions.jsonl"
    shots, where = [], ""
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f" line {n}"
            if line.strip():
                row = json.loads(line)
                answer = row["answer"][0] if isinstance(row["answer"], list) else row["answer"]
                shots.append((str(row["question"]), str(answer)))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise KitError(f"cannot read examples from {path}{where}: {type(e).__name__}: {e}") from None
    return shots


def fewshot_format(shots: Sequence[tuple[str, str]], description: str = NQ_OPEN_DESCRIPTION) -> ChatFormat:
    """A few-shot question format for base models, laid out as lm-evaluation-harness's nq_open
    task lays out its prompts, registered under a name that says how many examples it holds and
    hashes them (`"nq-open-5shot-1a2b3c4d"`), so runs with other examples never share a run key.

    Only the last question of a conversation is asked (a few-shot prompt has no turns), and a
    system prompt is not used: the description stands in its place.
    """
    import hashlib

    shots = [(str(q), str(a)) for q, a in shots]
    context = "".join(f"{nq_question(q)} {a}\n" for q, a in shots)
    digest = hashlib.sha256((description + context).encode()).hexdigest()[:8]
    name = f"nq-open-{len(shots)}shot-{digest}"

    def render(messages: Sequence[Message]) -> str:
        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return description + context + nq_question(str(question))

    render.__doc__ = f"nq_open's layout with {len(shots)} examples."
    register_format(name, stops=NQ_OPEN_STOPS)(render)
    return ChatFormat(name, stops=NQ_OPEN_STOPS)


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Move a leading system message into the first user message."""
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            break
    return rest


#: Oldest versions with the known fixes: Jinja2's sandbox escapes (CVE-2024-56326, CVE-2025-27516)
#: and llama-cpp-python rendering templates unsandboxed (CVE-2024-34359).
MIN_VERSIONS = {"jinja2": (3, 1, 6), "llama-cpp-python": (0, 2, 72)}


def version_tuple(text: str) -> tuple[int, ...]:
    """`"3.1.6rc1"` -> (3, 1, 6)."""
    import re

    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def check_versions() -> None:
    """Refuse to run templates with a Jinja2 or llama-cpp-python older than the known fixes."""
    from importlib.metadata import PackageNotFoundError, version

    for pkg, least in MIN_VERSIONS.items():
        try:
            have = version(pkg)
        except PackageNotFoundError:
            continue
        if version_tuple(have) < least:
            want = ".".join(map(str, least))
            raise KitError(
                f"{pkg} {have} has known security holes in chat templates; "
                f"upgrade to {want} or newer (make install)"
            )


def render_template(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render a GGUF chat template in the bounded sandbox worker; KitError (one line) if it
    misbehaves, TemplateLimitError if it went past a bound of time, memory or output size."""
    text, _ = template_worker.render(
        template,
        messages,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )
    return text


@dataclass
class ChatFormat:
    """How one model turns messages into a prompt: a named format or the GGUF's template.

    A template format with a `fallback` switches itself to that named format, for good, the
    first time the template goes past a bound (TemplateLimitError) and renders in it at once;
    `warning` then says why, for the caller to show. Not frozen for that reason: one Engine
    renders under its own lock, so the switch is never seen half done.

    Renders that follow one another within BURST_GAP_S share one budget of WALL_S seconds:
    fit_history renders a long conversation again after each trim, and a template that takes
    just under the bound each time must not hold a question for that many times the bound.
    """

    name: str
    template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    stops: tuple[str, ...] = field(default=())
    fallback: str | None = None  # named format to switch to when the template goes past a bound
    warning: str | None = None  # why the format is not what the file asked for, if it is not
    _spent: float = field(default=0.0, init=False, repr=False, compare=False)  # seconds, this burst
    _last: float = field(default=float("-inf"), init=False, repr=False, compare=False)

    def render(self, messages: Sequence[Message]) -> str:
        template = self.template
        if template is not None:
            try:
                return self._render_template(template, messages)
            except TemplateLimitError as e:
                if self.fallback is None:
                    raise
                self.switch_to_fallback(str(e))
        return FORMATS[self.name](messages)

    def _render_template(self, template: str, messages: Sequence[Message]) -> str:
        if time.monotonic() - self._last > BURST_GAP_S:
            self._spent = 0.0
        try:
            if self._spent >= WALL_S:
                raise TemplateLimitError(template_worker.refused(f"took more than {WALL_S:g} s to render"))
            text, seconds = template_worker.render(
                template,
                messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                timeout=WALL_S - self._spent,
            )
            self._spent += seconds
            return text
        except TemplateLimitError:
            raise  # rendering it again without the system turn would cost another bound
        except KitError as e:
            # Some templates (Gemma's) refuse a system role: fold it into the first user turn.
            if "unsafe" in str(e) or not messages or messages[0]["role"] != "system":
                raise
            return self._render_template(template, fold_system(messages))
        finally:
            self._last = time.monotonic()

    def switch_to_fallback(self, why: str) -> None:
        """Use the fallback named format from now on (the template is never rendered again)."""
        fallback = self.fallback or "chatml"
        self.name, self.stops, self.warning = fallback, STOPS[fallback], f"{why}; using {fallback}"
        self.template = None  # last: a render that reads it as None finds the new name set


def choose_format(
    requested: str | None,
    template: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
    fallback: str = "chatml",
) -> tuple[ChatFormat, str | None]:
    """Pick the chat format for a model; returns it and a warning to show, or None.

    `requested` is a named format or "template"; None means the GGUF's own template when the
    file has one that renders safely, else `fallback`.
    """
    check_versions()
    if requested not in (None, "template") and requested not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise KitError(f"unknown chat format {requested!r}; known formats: {known}, template")
    if requested not in (None, "template"):
        return ChatFormat(requested, stops=STOPS[requested]), None
    if template:
        fmt = ChatFormat("template", template, bos_token, eos_token, stops=(eos_token,) if eos_token else ())
        probe = [{"role": "user", "content": "u"}]
        try:
            fmt.render(probe)  # in the bounded worker: a template past a bound is refused here too
        except KitError as e:
            if requested == "template":
                raise
            warning = f"{e}; using {fallback}"
            return ChatFormat(fallback, stops=STOPS[fallback], warning=warning), warning
        # Asked for by name, the template stays (a later bound is an error); chosen by default,
        # it gives way to the fallback format on a later question that makes it go past a bound.
        return (fmt if requested == "template" else replace(fmt, fallback=fallback)), None
    if requested == "template":
        raise KitError("this model file carries no chat template; choose a named format (--format chatml)")
    return ChatFormat(fallback, stops=STOPS[fallback]), None

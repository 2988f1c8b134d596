"""Chat formats: the GGUF's own template (sandboxed) and named formats for files without one.

A chat template inside a GGUF is code written by whoever made the file. It is rendered only
in Jinja2's ImmutableSandboxedEnvironment (CVE-2024-34359 was llama-cpp-python rendering it
unsandboxed), and a template that reaches for Python internals is refused, not run.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jinja2
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from research.errors import KitError

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}

#: Named formats: name -> function(messages) -> prompt ending where the assistant speaks.
FORMATS: dict[str, Callable[[Sequence[Message]], str]] = {}
#: Strings that end an answer in each named format, besides the model's end-of-generation token.
STOPS: dict[str, tuple[str, ...]] = {}

#: The system prompt of Orca-Mini's model card, which the paper used.
ORCA_SYSTEM = "You are an AI assistant that follows instruction extremely well. Help as much as you can."


def register_format(name: str, stops: tuple[str, ...] = ()):
    """Register a named chat format (llama-cpp-python's register_chat_format, kept small)."""

    def wrap(fn):
        FORMATS[name] = fn
        STOPS[name] = stops
        return fn

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


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Move a leading system message into the first user message."""
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            break
    return rest


def _raise(message: str):
    raise TemplateError(message)


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


def _sandbox() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(str(fmt))
    return env


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    """A template compiled once, not on every question (compiling costs ~2.5 ms)."""
    return _sandbox().from_string(template)


def render_template(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render a GGUF chat template in the sandbox; refuse it with KitError if it misbehaves."""
    try:
        compiled = _compiled(template)
        return compiled.render(
            messages=list(messages),
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except SecurityError as e:
        raise KitError(
            f"the model's chat template tried an unsafe operation and was refused ({e}); "
            "choose a named format instead (--format chatml)"
        ) from None
    except (TemplateError, TypeError, ValueError, RecursionError) as e:
        raise KitError(
            f"the model's chat template failed to render ({type(e).__name__}: {e}); "
            "choose a named format instead (--format chatml)"
        ) from None


@dataclass(frozen=True)
class ChatFormat:
    """How one model turns messages into a prompt: a named format or the GGUF's template."""

    name: str
    template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    stops: tuple[str, ...] = field(default=())

    def render(self, messages: Sequence[Message]) -> str:
        if self.template is None:
            return FORMATS[self.name](messages)
        try:
            return render_template(
                self.template, messages, bos_token=self.bos_token, eos_token=self.eos_token
            )
        except KitError as e:
            # Some templates (Gemma's) refuse a system role: fold it into the first user turn.
            if "unsafe" in str(e) or not messages or messages[0]["role"] != "system":
                raise
            return self.render(fold_system(messages))


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
            fmt.render(probe)
            return fmt, None
        except KitError as e:
            if requested == "template":
                raise
            return ChatFormat(fallback, stops=STOPS[fallback]), f"{e}; using {fallback}"
    if requested == "template":
        raise KitError("this model file carries no chat template; choose a named format (--format chatml)")
    return ChatFormat(fallback, stops=STOPS[fallback]), None

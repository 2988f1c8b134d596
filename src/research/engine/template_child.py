"""The child that renders GGUF chat templates (research.engine.templates starts and bounds it): the
bounds, the one-JSON-line protocol, Jinja2's immutable sandbox, and the loop that answers.

Run as `python -m research.engine.template_child` by the parent only.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import resource
import signal
import sys
from pathlib import Path

import jinja2
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from research.errors import KitError

# The bounds. A real chat template renders a short conversation in about 0.1 ms here (Jinja
# compiles it once per worker, ~3 ms), and a phone's core is some 5-10 times slower.
#: Wall-clock seconds a render may take, counted by the parent. 3 s is thousands of times what
#: any real template needs even on a phone with a long conversation, and short enough that a
#: refused template costs one noticeable pause, not a hang; other threads never wait on it.
WALL_S = 3.0
#: CPU seconds a render may use (RLIMIT_CPU, set by the worker before each render). The parent's
#: wall clock normally acts first; this ends a spinning worker whose parent died or is stuck.
CPU_S = 3
#: Address space the worker may add to what it holds once started (RLIMIT_AS; Python and Jinja2
#: take ~25 MB). Rendering the largest conversation a context can hold (128k tokens are ~0.5 MB
#: of text) needs a few MB; 256 MB is 50 times that and a small share of a phone's free memory
#: beside the model. Counted from the worker's start, since some allocators reserve address
#: space up front. Not enforced where RLIMIT_AS is not (macOS).
MEMORY_MB = 256
#: Characters a rendered prompt may have, on top of twice the conversation's own text: 1 MiB is
#: twice the text of the largest context a model of the catalog has (128k tokens), so a real
#: template never reaches it, and it caps what a hostile one can make this process read.
OUTPUT_CHARS = 1 << 20
#: Seconds a new worker may take to start (Python and Jinja2: 0.1 s here; a phone under load,
#: or cold caches after a reboot, can be many times slower). Not counted in WALL_S.
START_S = 20.0
#: Workers at most: one serves every render in turn; a second starts only when two renders
#: overlap (e.g. one stuck until WALL_S while another session asks). Each costs ~20 MB resident.
MAX_WORKERS = 2
#: Bytes of a reply line the parent reads at most: JSON escapes a character in at most 6.
LINE_FACTOR = 6
HINT = "choose a named format instead (--format chatml)"


class TemplateLimitError(KitError):
    """A chat template went past a bound (time, memory, output size, depth) and was stopped."""


def refused(what: str) -> str:
    """`"recursed too deeply"` -> "the model's chat template recursed too deeply; choose ..."."""
    return f"the model's chat template {what}; {HINT}"


# ---- the child: the sandbox, compiled once per template text ----


def _raise(message: str):
    raise TemplateError(message)


def sandbox() -> ImmutableSandboxedEnvironment:
    """The Jinja2 environment GGUF templates render in (immutable sandbox, HF-style globals)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(str(fmt))
    return env


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    """A template compiled once, not on every question (compiling costs ~2.5 ms)."""
    return sandbox().from_string(template)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def serve(request: dict) -> dict:
    """Render one request; every failure becomes {"error": kind, "message": ...}."""
    try:
        text = _compiled(request["template"]).render(
            messages=request["messages"],
            bos_token=request["bos_token"],
            eos_token=request["eos_token"],
            add_generation_prompt=request["add_generation_prompt"],
        )
    except MemoryError:
        return {"error": "memory", "message": ""}
    except RecursionError:
        return {"error": "recursion", "message": ""}
    except SecurityError as e:
        return {"error": "unsafe", "message": _one_line(e)}
    except Exception as e:  # TemplateError, TypeError, OverflowError (sandbox's range cap)...
        return {"error": "failed", "message": _one_line(f"{type(e).__name__}: {e}")}
    if len(text) > request["max_chars"]:
        return {"error": "output", "message": ""}
    return {"text": text}


def _limit_memory() -> None:
    try:
        status = Path("/proc/self/status").read_text()
        now = int(status.split("VmSize:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        now = 64 << 20
    try:
        limit = now + (MEMORY_MB << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass  # macOS: RLIMIT_AS cannot be set; the output cap still holds


def _limit_cpu() -> None:
    """Allow CPU_S more seconds of CPU from now (RLIMIT_CPU counts the process's whole life)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(use.ru_utime + use.ru_stime) + 1 + CPU_S
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _encode(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass") + b"\n"


def _decode(line: bytes) -> dict:
    return json.loads(line.decode("utf-8", "surrogatepass"))


def main() -> None:
    """The worker: limit itself, then answer one JSON line with one JSON line until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the answer, not the renderer
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would otherwise dump core
    _limit_memory()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(_encode({"ready": os.getpid()}))
    out.flush()
    for line in inp:
        _limit_cpu()
        out.write(_encode(serve(_decode(line))))
        out.flush()


if __name__ == "__main__":
    main()

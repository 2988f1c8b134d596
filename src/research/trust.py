"""Which model files the kit vouches for, and trying the others in a child process first.

A hostile or damaged GGUF can make llama.cpp abort (CVE-2024-21802, CVE-2025-53630, ...), which
would end the interpreter, and with it the page and every session on it. The header is validated
in Python first (research.gguf_info); then a file the kit cannot vouch for (anything but the
bundled model and catalog downloads of the right size) is loaded once in a child process, this
module run as `python -m research.trust PATH N_CTX MODE`, so a crash ends the child only.
"""

from __future__ import annotations

from pathlib import Path

from research import child
from research.models import ModelRef, models_dir

#: Seconds a trial load may take before the file counts as hostile (a 4 GB file reads in far less).
TIMEOUT_S = 600


def trusted(ref: ModelRef) -> bool:
    """Files the kit can vouch for: the bundled model and catalog downloads of the right size."""
    entry = ref.entry
    if entry is None:
        return False
    if entry.bundled:  # the package's own file, not any file of the same name
        return ref.path.resolve() == (entry.local_path() or Path("/nonexistent")).resolve()
    return ref.path.parent == models_dir().resolve() and entry.size == ref.path.stat().st_size


def probe_load(path, n_ctx: int, timeout: float = TIMEOUT_S, mapped: bool = True, cmd=None) -> None:
    """Load `path` in a child process first: a crash inside llama.cpp ends the child, not us.

    `mapped`: map the file or read it in, as the real load will. `cmd` replaces the child's
    command (tests simulate a crash with it).
    """
    name = Path(path).name
    cmd = cmd or child.python_module("research.trust", path, n_ctx, "mmap" if mapped else "read")
    child.run(
        cmd,
        f"trying {name}",
        timeout=timeout,
        timeout_hint="; the file may be hostile",
        crash_hint=(
            f" loading {name} in llama.cpp: the file is damaged or hostile; it was tried in a separate "
            "process, so nothing else was affected"
        ),
    )


def _try_here(argv: list[str]) -> None:
    """The child: load the file as the engine will, with one thread, and evaluate a token."""
    from research.engine import EngineConfig
    from research.llama_backend import LlamaBackend

    path, n_ctx, mode = argv
    b = LlamaBackend(path, EngineConfig(n_ctx=int(n_ctx), n_threads=1, use_mmap=mode == "mmap"))
    b.llm.eval(b.tokenize("Hi")[:4] or [0])


if __name__ == "__main__":
    child.child_main(_try_here)

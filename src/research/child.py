"""Child processes: one way to run them, and to turn their failures into one line.

Work that may crash the interpreter (llama.cpp aborts on a hostile file), that must be measured
alone (a process's peak memory), or that is another program (llama-bench, llama-cli, pip, git)
runs in a child process. The kit's own child programs are real modules run with `python -m`
(research.selftest, research.memory_measure, research.quantize, research.template_worker); one
reports an error the user can act on by printing it as its last line on stderr and exiting with
EXIT_KIT_ERROR (child_main does both), and the parent raises that line as it is.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from research.errors import KitError

#: A child program's exit code for "a KitError: my last stderr line says what to do".
EXIT_KIT_ERROR = 3


def python_module(module: str, *args) -> list[str]:
    """The command that runs one of the kit's modules: `python_module("research.selftest", "a")`."""
    return [sys.executable, "-m", module, *(str(a) for a in args)]


def last_line(text: str | None) -> str:
    """The last non-empty line of a child's output: `"a\\nb\\n\\n"` -> `"b"`."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failure(what: str, returncode: int, stderr: str | None, crash_hint: str = "") -> KitError:
    """One line for a child that failed: its own message, its crash, or its exit code."""
    last = last_line(stderr)
    if returncode == EXIT_KIT_ERROR and last:
        return KitError(last)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return KitError(f"{what} crashed ({name}){crash_hint or (': ' + last if last else '')}")
    return KitError(f"{what} failed (exit {returncode}): {last or 'no message'}")


def run(
    cmd: Sequence[str],
    what: str,
    *,
    timeout: float | None = None,
    timeout_hint: str = "",
    crash_hint: str = "",
    check: bool = True,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run `cmd` to its end, output captured as text; KitError in one line when it fails.

    `what` names the work in messages ("llama-bench on model.gguf"). Returns the finished
    process (also a failed one with check=False). Ctrl-C stops the child before it propagates.
    """
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    try:
        r = subprocess.run(
            list(cmd), capture_output=True, text=True, errors="replace", timeout=timeout, **kwargs
        )
    except FileNotFoundError:
        raise KitError(f"{what}: {cmd[0]} was not found") from None
    except subprocess.TimeoutExpired:
        raise KitError(f"{what} did not finish within {timeout:.0f} s{timeout_hint}") from None
    if check and r.returncode != 0:
        raise failure(what, r.returncode, r.stderr, crash_hint)
    return r


def child_main(work: Callable[[list[str]], None]) -> None:
    """The body of a child program's `if __name__ == "__main__"`: run `work(argv)`, and turn a
    KitError into its message on stderr and EXIT_KIT_ERROR."""
    try:
        work(sys.argv[1:])
    except KitError as e:
        print(e, file=sys.stderr)
        sys.exit(EXIT_KIT_ERROR)

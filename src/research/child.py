"""Child processes: one way to run them, and to turn their failures into one line.

Work that may crash the interpreter (llama.cpp aborts on a hostile file), that must be measured
alone (a process's peak memory), or that is another program (llama-bench, llama-cli, pip, git)
runs in a child process. The kit's own child programs are real modules run with `python -m`
(research.engine.selftest, research.measure.memory, research.models.quantize, research.engine.templates); one
reports an error the user can act on by printing it as its last line on stderr and exiting with
EXIT_KIT_ERROR (child_main does both), and the parent raises that line as it is. A child that
reports as it goes is read line by line with a deadline between lines (stream_lines); one that
serves many requests is a Worker, each request with its own deadline.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

from research.errors import KitError

#: A child program's exit code for "a KitError: my last stderr line says what to do".
EXIT_KIT_ERROR = 3


def python_module(module: str, *args) -> list[str]:
    """The command that runs one of the kit's modules: `python_module("research.engine.selftest", "a")`."""
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


def stream_lines(
    cmd: Sequence[str],
    what: str,
    *,
    idle_timeout: float,
    timeout_hint: str = "",
    crash_hint: str = "",
    max_line: int = 1 << 26,
    **kwargs,
) -> Iterator[bytes]:
    """Run `cmd` and yield each line of its output as it comes (a child that reads a large file
    and reports as it goes); KitError in one line when it says nothing for `idle_timeout` s, writes
    a line longer than `max_line` bytes, or fails. Closing the generator early ends the child."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, **kwargs
        )
        try:
            out, buf = proc.stdout.fileno(), bytearray()
            poll = select.poll()
            poll.register(out, select.POLLIN)
            while True:
                end = buf.find(b"\n")
                if end >= 0:
                    line = bytes(buf[:end])
                    del buf[: end + 1]
                    yield line
                    continue
                if len(buf) > max_line:
                    raise KitError(f"{what} wrote more than {max_line >> 20} MB in one piece{crash_hint}")
                if not poll.poll(idle_timeout * 1000):
                    raise KitError(f"{what} gave nothing for {idle_timeout:.0f} s{timeout_hint}")
                chunk = os.read(out, 1 << 16)
                if not chunk:
                    break
                buf += chunk
            code = proc.wait()
            if code != 0:
                err.seek(0)
                raise failure(what, code, err.read().decode("utf-8", "replace"), crash_hint)
            if buf.strip():
                yield bytes(buf)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


class Worker:
    """A persistent child program that answers one JSON line with one JSON line, within a deadline.

    Its first line is `{"ready": pid}`; the time to start is not counted against a request. A
    request past its deadline, or a child that dies, is a KitError in one line, and the child is
    ended: the next request starts a new one. Used by one thread at a time (callers hold a lock).
    """

    def __init__(self, cmd: Sequence[str], what: str, start_timeout: float, crash_hint: str = "", **kwargs):
        self.what, self.start_timeout, self.crash_hint = what, start_timeout, crash_hint
        self.proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C is for the kit, not for its workers
            **kwargs,
        )
        self.buf = bytearray()
        self.ready = False
        self.owner = os.getpid()

    def _line(self, deadline: float) -> bytes | None:
        out = self.proc.stdout.fileno()
        poll = select.poll()
        poll.register(out, select.POLLIN)
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(left * 1000):
                return None
            chunk = os.read(out, 1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def call(self, request: dict, timeout: float) -> dict:
        """The child's reply to `request` within `timeout` seconds; KitError (and the child ended)
        when it takes longer or dies."""
        try:
            if not self.ready:
                line = self._line(time.monotonic() + self.start_timeout)
                if line is None or "ready" not in json.loads(line):
                    raise KitError(f"{self.what} did not start within {self.start_timeout:.0f} s")
                self.ready = True
            deadline = time.monotonic() + timeout
            self.proc.stdin.write(json.dumps(request, ensure_ascii=True).encode() + b"\n")
            self.proc.stdin.flush()
            line = self._line(deadline)
        except (EOFError, BrokenPipeError, ValueError):
            self.close()
            code = self.proc.returncode
            raise failure(self.what, code if code is not None else -9, None, self.crash_hint) from None
        except BaseException:
            self.close()
            raise
        if line is None:
            self.close()
            raise KitError(f"{self.what} did not finish within {timeout:g} s and was stopped")
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.owner != os.getpid():
            return  # a forked copy of the process that started it: the child is not ours
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

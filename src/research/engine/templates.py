"""Render GGUF chat templates in a child process, bounded in time, memory and output size.

Jinja2's sandbox stops a template from reaching Python's insides, but not from working without
end: nested `range` loops ran `research chat` for over a minute, and a string built by repeated
`~` grew the process to 14.7 GB, which on a phone is a kill by the low-memory killer. Python
threads cannot be stopped and the sandbox cannot count loop iterations, so templates render
here: in a persistent child process (`python -m research.engine.template_child`), started on the
first render and reused, which limits its own address space and CPU time; the parent enforces a
wall-clock timeout and an output cap, kills a worker past a bound, raises TemplateLimitError
(one line) and starts a fresh worker for the next render. Up to MAX_WORKERS workers serve the
threads of one process, so a render stuck until its bound delays no other thread's render.

The protocol is one JSON line each way. The worker first writes `{"ready": pid}`; then, for
each request `{"template", "messages", "bos_token", "eos_token", "add_generation_prompt",
"max_chars"}`, it answers `{"text": ...}` or `{"error": kind, "message": ...}`.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from research.engine.template_child import (  # noqa: F401 (the bounds are read here too)
    CPU_S,
    HINT,
    LINE_FACTOR,
    MAX_WORKERS,
    MEMORY_MB,
    OUTPUT_CHARS,
    START_S,
    WALL_S,
    TemplateLimitError,
    _decode,
    _encode,
    refused,
)
from research.errors import KitError
from research.paths import PACKAGE_PARENT

# ---- the parent: workers, the pool, the bounds it enforces ----

_SRC = PACKAGE_PARENT  # the folder holding `research`: the child's working folder


class _Worker:
    """One child process and its pipes; used by one thread at a time."""

    def __init__(self):
        # cwd: `python -m` puts the working folder first on sys.path, and a `jinja2.py` in the
        # user's downloads must not be what the worker imports; there, `research` is ours.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "research.engine.template_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=_SRC,
            start_new_session=True,  # the terminal's Ctrl-C is for the kit, not for the worker
        )
        self.out, self.inp = self.proc.stdout.fileno(), self.proc.stdin.fileno()
        os.set_blocking(self.out, False)
        os.set_blocking(self.inp, False)
        self.buf = bytearray()
        self.ready = False  # its first line not read yet: starting takes ~0.1 s, read when needed
        self.owner = os.getpid()
        _LIVE.add(self)

    def wait_ready(self) -> None:
        """Wait for the worker's first line (at most START_S); KitError if it does not come."""
        if self.ready:
            return
        try:
            line = self._read_line(time.monotonic() + START_S, 4096)
            self.ready = line is not None and "ready" in _decode(line)
        except (EOFError, KitError, ValueError):
            line = b""
        if not self.ready:
            why = f"did not start within {START_S:.0f} s" if line is None else "failed to start"
            raise KitError(f"the chat template renderer {why}; {HINT}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_line(self, deadline: float, limit: int) -> bytes | None:
        """The next line, or None on timeout; TemplateLimitError past `limit` bytes."""
        poll = select.poll()
        poll.register(self.out, select.POLLIN)
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > limit:
                raise TemplateLimitError(refused("produced too much text and was stopped"))
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(left * 1000):
                return None
            try:
                chunk = os.read(self.out, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError
            self.buf += chunk

    def _write(self, data: bytes, deadline: float) -> bool:
        poll = select.poll()
        poll.register(self.inp, select.POLLOUT)
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(left * 1000):
                return False
            try:
                view = view[os.write(self.inp, view) :]
            except BlockingIOError:
                continue
        return True

    def call(self, request: dict, timeout: float) -> dict:
        """Send one request and read its reply within `timeout`; TemplateLimitError past a bound."""
        deadline = time.monotonic() + timeout
        try:
            sent = self._write(_encode(request), deadline)
            line = self._read_line(deadline, LINE_FACTOR * request["max_chars"] + 4096) if sent else None
        except (EOFError, BrokenPipeError):
            raise TemplateLimitError(self._death()) from None
        if line is None:
            raise TemplateLimitError(refused(f"did not finish rendering within {WALL_S:g} s and was stopped"))
        return _decode(line)

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code == -signal.SIGXCPU:
            return refused(f"used more than {CPU_S} s of CPU and was stopped")
        try:
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"
        except ValueError:
            how = f"signal {-code}"
        return f"the chat template renderer died ({how}) on the model's chat template; {HINT}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        _LIVE.discard(self)
        if self.owner != os.getpid():
            return  # a forked copy of the process that started it: the worker is not ours
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


_LIVE: set[_Worker] = set()  # every worker this process started and has not killed


class _Pool:
    """Up to `size` workers shared by threads: each render borrows one and returns it."""

    def __init__(self, size: int):
        self.size = size
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.count = 0  # workers idle, busy or starting
        self.owner = os.getpid()

    def _acquire(self) -> _Worker:
        # Each holder returns its worker within START_S + WALL_S (plus a kill): waiting longer
        # than a few times that means something else is wrong; say so rather than hang.
        give_up = time.monotonic() + 4 * (START_S + WALL_S)
        with self.cond:
            if self.owner != os.getpid():  # a forked child: its parent's workers are not ours
                self.idle, self.count, self.owner = [], 0, os.getpid()
            while not self.idle and self.count >= self.size:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise KitError("the chat template renderer is busy; try again")
                self.cond.wait(left)
            if self.idle:
                worker = self.idle.pop()
                if worker.alive():
                    return worker
                worker.kill()  # died while idle (killed from outside): replace it
            else:
                self.count += 1
        try:
            return _Worker()
        except BaseException:
            self._release(None)
            raise

    def prestart(self) -> None:
        """Start a worker now, if none is, without waiting for it to be ready."""
        with self.cond:
            if self.owner != os.getpid() or self.count:
                return
            self.count += 1
            try:
                self.idle.append(_Worker())
            except BaseException:
                self.count -= 1
                raise

    def _release(self, worker: _Worker | None) -> None:
        """Give a worker back, or None for one that was killed (or never started)."""
        with self.cond:
            if worker is None:
                self.count -= 1
            else:
                self.idle.append(worker)
            self.cond.notify()

    def call(self, request: dict, timeout: float) -> tuple[dict, float]:
        """The worker's reply and the seconds it took (not counting the wait for a worker)."""
        worker = self._acquire()
        try:
            worker.wait_ready()  # its start is not the template's time
            start = time.monotonic()
            reply = worker.call(request, timeout)
        except BaseException:  # timeout, death, output cap, or an interrupt mid-render
            worker.kill()
            self._release(None)
            raise
        if reply.get("error") in ("memory", "recursion", "output"):
            worker.kill()  # a fresh worker for the next render, not a fragmented heap
            self._release(None)
        else:
            self._release(worker)
        return reply, time.monotonic() - start

    def pids(self) -> list[int]:
        return [w.pid for w in _LIVE]

    def stop_idle(self) -> int:
        """End the workers nobody is using (a page giving memory back); returns how many."""
        with self.cond:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
        for worker in idle:
            worker.kill()
        return len(idle)


_POOL = _Pool(MAX_WORKERS)


@atexit.register
def _stop_all() -> None:
    for worker in list(_LIVE):
        worker.kill()


def worker_pids() -> list[int]:
    """Process ids of the live workers (for tests and diagnostics)."""
    return _POOL.pids()


def stop_idle() -> int:
    """End the idle workers (about 21 MB each); the next render starts one again."""
    return _POOL.stop_idle()


def prestart() -> None:
    """Start the first worker without waiting for it, so its start (~0.1 s) overlaps other work,
    such as loading the model whose template it will render."""
    _POOL.prestart()


def render(
    template: str,
    messages: Sequence[dict],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    timeout: float = WALL_S,
) -> tuple[str, float]:
    """Render a GGUF chat template in a worker; returns the text and the seconds it took.

    KitError (one line) if the template fails or is unsafe, TemplateLimitError if it goes past
    a bound: `timeout` seconds (WALL_S unless the caller shares one budget among renders),
    MEMORY_MB, or OUTPUT_CHARS plus twice the messages' text.
    """
    messages = [dict(m) for m in messages]
    text_size = sum(len(str(m.get("content", ""))) for m in messages)
    request = {
        "template": template,
        "messages": messages,
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
        "max_chars": OUTPUT_CHARS + 2 * text_size,
    }
    reply, seconds = _POOL.call(request, timeout)
    kind = reply.get("error")
    if kind is None:
        return reply["text"], seconds
    if kind == "unsafe":
        raise KitError(refused(f"tried an unsafe operation and was refused ({reply['message']})"))
    if kind == "failed":
        raise KitError(refused(f"failed to render ({reply['message']})"))
    if kind == "memory":
        raise TemplateLimitError(refused(f"needed more than {MEMORY_MB} MB and was stopped"))
    if kind == "recursion":
        raise TemplateLimitError(refused("recursed too deeply and was stopped"))
    if kind == "output":
        limit = request["max_chars"]
        raise TemplateLimitError(refused(f"produced more than {limit:,} characters and was stopped"))
    raise KitError(f"the chat template renderer answered {kind!r}; {HINT}")

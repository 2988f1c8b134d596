"""The chat page started in a child process on a free loopback port, and found by the address it
prints (its token included): one home for the measurements (research.measure.page) and the tests
(tests/page_server.py), which both need a real page to talk to.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from research.errors import KitError
from research.page import server

PRINTED = re.compile(r"Chat page: (\S+)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningPage:
    """A page process: `url` (no token), `open_url` (the printed address, what a browser opens),
    `token`, `headers` (what a program sends), `pid`, `log`, `start_s`; `client()`, `get()`,
    `stop()`. Started by start(), which waits until the page answers with its token."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None, cwd=None, timeout: float = 300):
        self.log, self.timeout = log, timeout
        self.port = int(cmd[cmd.index("--port") + 1]) if "--port" in cmd else int(cmd[-1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cmd, self.env, self.cwd = cmd, env, cwd

    def start(self) -> RunningPage:
        t = time.perf_counter()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                last = (self.log.read_text().strip().splitlines() or ["no output"])[-1]
                self.stop()
                raise KitError(f"the chat page did not come up: {last}")
            printed = PRINTED.search(self.log.read_text())
            if printed:
                self.open_url = printed.group(1)
                self.token = parse_qs(urlsplit(self.open_url).query)["token"][0]
                self.headers = {server.TOKEN_HEADER: self.token}
                try:
                    urllib.request.urlopen(urllib.request.Request(self.url, headers=self.headers), timeout=2)
                    break
                except OSError:
                    pass
            time.sleep(0.2)
        self.start_s = time.perf_counter() - t
        return self

    def client(self):
        """A gradio_client for the page, with its token."""
        return server.client(self.open_url)

    def get(self, route: str, headers: dict | None = None, token: bool = True, data=None):
        """(status, headers, body) of a request to the page (with its token unless told not to)."""
        sent = (self.headers if token else {}) | (headers or {})
        req = urllib.request.Request(self.url + route, headers=sent, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read(200_000)
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read(200_000)

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text():
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def demo_command(port: int, *args: str) -> list[str]:
    """`python -m research demo --port PORT ARGS...`."""
    return [sys.executable, "-m", "research", "demo", "--port", str(port), *args]


def private_env(folder: Path, **more: str) -> dict:
    """The page's own ratings file and temporary folder in `folder`: never the user's."""
    return os.environ | {
        "RESEARCH_RATINGS_FILE": str(folder / "ratings.jsonl"),
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        **more,
    }

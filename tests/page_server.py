"""Start the real chat page in a child process on a free loopback port, for tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from research.page.server import TOKEN_HEADER

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PageServer:
    """`args` go to `research demo`; `script`, a JSON file, serves a scripted model instead
    (tests/scripted_page.py)."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None, script: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.ratings = tmp / "ratings.jsonl"
        self.log = tmp / "page.log"
        self.models = tmp / "models"  # the folder the page's loader may open files from
        self.models.mkdir(exist_ok=True)
        self.gradio = tmp / "gradio"  # the page makes its private folder for temporary files in here
        extra = env or {}
        env = os.environ | {
            "RESEARCH_RATINGS_FILE": str(self.ratings),
            "GRADIO_TEMP_DIR": str(self.gradio),
        }
        env |= extra
        cmd = [sys.executable, "-m", "research", "demo", "--port", str(self.port), "--ctx", "2048"]
        cmd += ["--models-dir", str(self.models), *args]
        if script is not None:
            cmd = [sys.executable, str(ROOT / "tests" / "scripted_page.py"), str(script), str(self.port)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the page exited: {self.log.read_text()}")
            printed = re.search(r"Chat page: (\S+)", self.log.read_text())
            if printed:
                #: The address the page printed, token and all: what a browser opens.
                self.open_url = printed.group(1)
                self.token = parse_qs(urlsplit(self.open_url).query)["token"][0]
                self.headers = {TOKEN_HEADER: self.token}
                try:
                    urllib.request.urlopen(urllib.request.Request(self.url, headers=self.headers), timeout=2)
                    return
                except OSError:
                    pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the page did not come up: {self.log.read_text()}")

    def client(self):
        """A gradio_client for the page, with its token."""
        from research.page.server import client

        return client(self.open_url)

    def get(self, route: str, headers: dict | None = None, token: bool = True, data=None):
        """(status, headers, body) of a request to the page (with its token unless told not to)."""
        import urllib.error

        sent = (self.headers if token else {}) | (headers or {})
        req = urllib.request.Request(self.url + route, headers=sent, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read(200_000)
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read(200_000)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

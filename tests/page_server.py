"""The real chat page in a child process on a free loopback port, for tests: research.page.launch's
page with the tests' defaults (its own ratings file, temporary folder and models folder), or a
scripted model instead (tests/scripted_page.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from research.page import launch

ROOT = Path(__file__).resolve().parents[1]


class PageServer(launch.RunningPage):
    """`args` go to `research demo`; `script`, a JSON file, serves a scripted model instead."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None, script: Path | None = None):
        port = launch.free_port()
        self.ratings = tmp / "ratings.jsonl"
        self.models = tmp / "models"  # the folder the page's loader may open files from
        self.models.mkdir(exist_ok=True)
        self.gradio = tmp / "gradio"  # the page makes its private folder for temporary files in here
        cmd = launch.demo_command(port, "--ctx", "2048", "--models-dir", str(self.models), *args)
        if script is not None:
            cmd = [sys.executable, str(ROOT / "tests" / "scripted_page.py"), str(script), str(port)]
        super().__init__(cmd, tmp / "page.log", launch.private_env(tmp, **(env or {})), cwd=ROOT, timeout=120)
        self.start()

"""The real chat page with a scripted model: its answers and metadata come from a JSON file.

For hostile-content tests in a real browser: whatever a hostile model could say, or a hostile
file could carry in its name and metadata, is said here on purpose. Run as
`python tests/scripted_page.py SCRIPT.json PORT`; SCRIPT.json holds {"answers": [...],
"model_id": ..., "file_type_name": ..., "warning": ..., "delay": seconds a character,
"logprobs": [...]} (one per answer, for a confidence: tests/fakes.py's FakeBackend).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeBackend  # noqa: E402


def main() -> None:
    script = json.loads(Path(sys.argv[1]).read_text())
    port = int(sys.argv[2])
    page = runpy.run_path(str(ROOT / "demo" / "app.py"), run_name="scripted_page")
    from research.engine import Engine
    from research.engine.prompts import STOPS, ChatFormat

    info = SimpleNamespace(file_type_name=script.get("file_type_name", "Q4_0"), file_size=2**20)
    engine = Engine(
        FakeBackend(
            script["answers"], n_ctx=4096, delay=script.get("delay", 0.002), logprobs=script.get("logprobs")
        ),
        ChatFormat("chatml", stops=STOPS["chatml"]),
        script.get("model_id", "scripted"),
        info,
        script.get("warning"),
    )
    engine.__dict__["sha256"] = "0" * 64
    page["host"].engine = engine
    page["server"].serve(page["demo"].queue(), "127.0.0.1", port, theme=page["THEME"], css=page["CSS"])


if __name__ == "__main__":
    main()

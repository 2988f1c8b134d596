"""The switches that keep the libraries the kit uses offline, set in one place.

huggingface_hub and datasets look things up on the network unless told not to (datasets sends a
download-count request for every local file it loads), and gradio reports usage; each reads its
switch from the environment when it is first imported. The kit sets them when the `research`
package is imported, before any of those libraries is, so every command, the page, the
notebooks and every child process the kit starts inherit them. The one command that goes online
on purpose, `research download`, uses its own HTTP client and reads none of them.

`audited_run` checks the switches from outside: it runs the kit's commands under the test suite's
network audit and counts what they tried to reach off this device (the paper's offline claim).
"""

from __future__ import annotations

import os
from pathlib import Path

from research.paths import REPO_ROOT

#: Each switch and the value that keeps its library off the network.
SWITCHES = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: no request to the hub
    "HF_DATASETS_OFFLINE": "1",  # datasets: no download count, no hub lookup for local files
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",  # gradio: no usage report, no version check
    "DO_NOT_TRACK": "1",
}


#: Set (to "1") only in the child that fetches a question set from the hub when the user asks
#: for one (`eval --questions hf:NAME`, research.qa.questions): the one process left online.
ONLINE = "RESEARCH_ONLINE"


def apply() -> None:
    """Set every switch in this process's environment (inherited by its children)."""
    if os.environ.get(ONLINE) == "1":
        return
    os.environ.update(SWITCHES)


#: The kit's commands the offline claim runs under the network audit (notebook 03 §7): the
#: catalog, a model's header, one answer and a scored evaluation on the bundled model.
AUDITED_COMMANDS = (
    ("models",),
    ("inspect",),
    ("chat", "--prompt", "What is the capital of France?", "--temperature", "0", "--max-tokens", "8"),
    ("eval", "--limit", "2"),
)
#: The test suite's network audit (tests/audit): a sitecustomize that installs an audit hook in every
#: Python process started with this folder on PYTHONPATH, children of children too.
AUDIT_DIR = REPO_ROOT / "tests" / "audit"
#: The address the probe asks about: TEST-NET-1 (RFC 5737), numeric, so asking sends nothing even
#: where no audit is installed.
PROBE_HOST = "192.0.2.1"


def _probe() -> None:
    """The child `python -m research.offline probe`: one lookup the audit must refuse and log."""
    import socket

    try:
        socket.getaddrinfo(PROBE_HOST, 80, flags=socket.AI_NUMERICHOST)
    except OSError:
        pass


def audited_run(commands=AUDITED_COMMANDS, timeout: float = 600, module: str = "research") -> dict:
    """Run the kit's `commands` (`python -m research ...`; `module`: another of its modules) under
    the network audit and count.

    First a probe that makes one lookup, which the audit must catch (else it is not live and the
    count would mean nothing: KitError); then each command, with people's data in a temporary
    folder. Returns {"attempts": lookups or connections off loopback by the commands, "hosts",
    "processes": Python processes audited (commands and their children), "commands", "date",
    "machine"}.
    """
    import json
    import platform
    import tempfile
    import time

    from research import child, device
    from research.errors import KitError
    from research.paths import PACKAGE_PARENT

    if not (AUDIT_DIR / "sitecustomize.py").is_file():
        raise KitError(
            f"the network audit is not in this checkout ({AUDIT_DIR}); run from a clone of the kit"
        )
    with tempfile.TemporaryDirectory(prefix="research-audit-") as tmp:
        log = Path(tmp) / "audit.jsonl"
        paths_ = [
            str(PACKAGE_PARENT),
            str(AUDIT_DIR),
            *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths_), RESEARCH_NET_AUDIT=str(log))
        env["RESEARCH_HOME"] = str(Path(tmp) / "home")
        env.pop(ONLINE, None)

        def records() -> list[dict]:
            text = log.read_text() if log.is_file() else ""
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        child.run(child.python_module("research.offline", "probe"), "the audit's probe", timeout=60, env=env)
        caught = [r for r in records() if r.get("host") == PROBE_HOST]
        if not caught:
            raise KitError("the network audit did not catch its probe: it is not live, so it cannot vouch")
        start = len(records())
        for cmd in commands:
            child.run(child.python_module(module, *cmd), f"{module} {cmd[0]}", timeout=timeout, env=env)
        ran = records()[start:]
    attempts = [r for r in ran if "event" in r]
    return {
        "attempts": len(attempts),
        "hosts": sorted({str(r["host"]) for r in attempts}),
        "processes": sum("process" in r for r in ran),
        "commands": [f"python -m {module} " + " ".join(c) for c in commands],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{device.cpu_info()}, {platform.machine()}",
    }


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["probe"]:
        _probe()

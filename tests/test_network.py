"""Nothing leaves the device: the page's own process tries no connection but to loopback."""

import ipaddress
import json
import os

import pytest

pytestmark = [pytest.mark.page, pytest.mark.model]

# Loaded by the page's Python at start (sitecustomize): logs every socket connect and name
# lookup the process attempts, from before gradio is imported until it exits.
AUDIT = """
import json, os, sys
try:  # the session's own audit (tests/audit), which this sitecustomize shadows: keep it on too
    import research_netaudit
    research_netaudit.install()
except ImportError:
    pass
_log = open(os.environ["RESEARCH_AUDIT_LOG"], "a", buffering=1)
def _hook(event, args):
    if event == "socket.connect":
        addr = args[1] if isinstance(args[1], str) else list(args[1])[:2]
        _log.write(json.dumps({"event": event, "addr": addr}) + "\\n")
    elif event == "socket.getaddrinfo":
        _log.write(json.dumps({"event": event, "host": str(args[0])}) + "\\n")
sys.addaudithook(_hook)
_log.write(json.dumps({"event": "start", "argv": sys.argv}) + "\\n")
"""


def loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def audited_env(tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    log = tmp_path / "audit.jsonl"
    pythonpath = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": pythonpath, "RESEARCH_AUDIT_LOG": str(log)}, log


def test_the_audit_hook_sees_connections(tmp_path):
    """The instrument works: a process that does connect is caught."""
    import socket
    import subprocess
    import sys

    env, log = audited_env(tmp_path)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"
        subprocess.run([sys.executable, "-c", code], env=os.environ | env, check=True, timeout=30)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"event": "socket.connect", "addr": ["127.0.0.1", port]} in events


def test_server_connects_nowhere_but_loopback(tmp_path):
    from page_server import PageServer

    env, log = audited_env(tmp_path)
    server = PageServer(tmp_path, env=env)
    try:
        c = server.client()
        history, _ = c.predict(
            "What is the capital of France?", [], "Be brief.", 0, 40, 0.95, 0.05, 1.1, 32, 1, api_name="/ask"
        )
        c.predict(history, 4, "correct", "", 0, 40, 0.95, 0.05, 1.1, 32, 1, api_name="/rate")
        c.predict(history, "", 0, 40, 0.95, 0.05, 1.1, 32, 1, api_name="/export")
    finally:
        server.stop()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["event"] == "start" for e in events)  # the hook ran inside the page's process
    off = [
        e
        for e in events
        if (
            e["event"] == "socket.connect"
            and not isinstance(e["addr"], str)
            and not loopback(str(e["addr"][0]))
        )
        or (e["event"] == "socket.getaddrinfo" and not loopback(e["host"]))
    ]
    assert off == [], f"the server tried to reach: {off}"

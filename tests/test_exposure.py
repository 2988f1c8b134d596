"""Exposure: only loopback listens, whatever the environment says; file routes stay inside the app."""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from research.models import resolve

pytestmark = [pytest.mark.page, pytest.mark.model]
ROOT = Path(__file__).resolve().parents[1]


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(200_000)
    except urllib.error.HTTPError as e:
        return e.code, e.read(200_000)


def test_environment_cannot_open_the_page_up(tmp_path):
    from page_server import PageServer

    env = {"GRADIO_SHARE": "True", "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_ANALYTICS_ENABLED": "True"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = PageServer(tmp_path)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        listening = [
            c.laddr.ip
            for c in psutil.Process(server.proc.pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(ip in ("127.0.0.1", "::1") for ip in listening), listening
        assert "gradio.live" not in server.log.read_text() and "share" not in server.log.read_text().lower()
    finally:
        server.stop()


def test_other_address_needs_the_explicit_flag():
    r = subprocess.run(
        [sys.executable, "-m", "research", "demo", "--host", "0.0.0.0", "--port", "7999"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 1 and "--listen-anywhere" in r.stderr and "Traceback" not in r.stderr


SECRET_FILES = ["/etc/passwd", str(ROOT / "data" / "models.yaml"), str(resolve(None).path)]
TRAVERSALS = [
    "gradio_api/file={p}",
    "gradio_api/file/{p}",
    "GRADIO_API/FILE={p}",
    "gradio_api/File={p}",
    "gradio_api/file=..%2f..%2f..%2f..%2f..{p}",
    "gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e{p}",
    "file={p}",
    "static/../../../../..{p}",
    "assets/..%2f..%2f..%2f..%2f..{p}",
    "gradio_api/file=....//....//....//....//....{p}",
    "gradio_api/proxy=file://{p}",
]


@pytest.mark.parametrize("route", TRAVERSALS)
@pytest.mark.parametrize("secret", SECRET_FILES, ids=["passwd", "catalog", "model"])
def test_file_routes_cannot_read_outside_the_app(page, route, secret):
    status, body = get(page.url + route.format(p=secret))
    assert status in (400, 403, 404, 405), (status, body[:200])
    assert b"root:" not in body and b"models:" not in body and not body.startswith(b"GGUF")


@pytest.mark.parametrize(
    "route", ["gradio_api/runs", "gradio_api/run-history/records", "gradio_api/proxy=https://example.com/"]
)
def test_no_run_history_and_no_proxy(page, route):
    status, _ = get(page.url + route)
    assert status in (400, 401, 403, 404)

"""Serve the chat page on this device only.

The page is mounted on our own FastAPI app and run by uvicorn instead of `demo.launch()`:
launch() can open a public share link (GRADIO_SHARE, Colab) and phones home for version
checks and analytics. Here nothing is shared, the bind address is explicit, analytics are
off before gradio is imported, and requests whose Host or Origin is not this device are
refused (DNS rebinding: Gradio CVE-2024-1727, Ollama CVE-2024-28224), `Origin: null` (sandboxed
frames, data: and file: pages) included. Every response carries a Content-Security-Policy that
lets the page contact nothing but its own origin, whatever text it shows (research.page_text
keeps that text from being HTML in the first place). The page's temporary files (uploads,
exports) live in a private folder that is removed when the page stops.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from research.errors import KitError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def offline_environment() -> None:
    """Turn off everything in gradio and huggingface_hub that would reach the network."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    for name in ("GRADIO_SHARE", "GRADIO_SERVER_NAME", "GRADIO_ROOT_PATH"):
        os.environ.pop(name, None)
    # Uploaded and exported files live in a private folder, never next to models or data.
    os.environ["GRADIO_TEMP_DIR"] = str(private_temp_dir(os.environ.get("GRADIO_TEMP_DIR")))


PRIVATE_PREFIX = "research-page-"


def private_temp_dir(parent: str | None = None) -> Path:
    """A folder only this user can read, for the page's temporary files; removed at exit.

    Conversations must not stay at rest on a device that may be seized: the folder goes when the
    page stops (Ctrl-C, SIGTERM, the end of the process), and folders left by a page that was
    killed outright (kill -9, a crash) are removed the next time a page starts.
    """
    base = Path(parent).expanduser() if parent else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    sweep_stale(base)
    folder = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=base))  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def sweep_stale(base: Path) -> list[Path]:
    """Remove the private folders of pages whose process no longer runs; returns them."""
    import psutil

    gone = []
    for folder in base.glob(f"{PRIVATE_PREFIX}*-*"):
        m = re.match(rf"{PRIVATE_PREFIX}(\d+)-", folder.name)
        if (
            m
            and folder.is_dir()
            and folder.owner() == Path.home().owner()
            and not psutil.pid_exists(int(m[1]))
        ):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostGuard:
    """ASGI middleware: refuse requests whose Host or Origin names another machine."""

    def __init__(self, app, allowed_hosts: set[str], any_host: bool = False):
        self.app, self.allowed, self.any_host = app, {h.lower() for h in allowed_hosts}, any_host

    def _ok(self, headers: dict[bytes, bytes]) -> bool:
        host = headers.get(b"host", b"").decode("latin-1").lower()
        try:
            hostname = urlsplit(f"//{host}").hostname or ""
        except ValueError:
            return False
        if not (self.any_host or hostname in self.allowed or is_loopback(hostname)):
            return False
        origin = headers.get(b"origin", b"").decode("latin-1").lower()
        if origin == "null":  # a sandboxed frame, a data: or file: page: foreign, whoever it is
            return False
        if origin:
            try:
                oname = urlsplit(origin).hostname or ""
            except ValueError:
                return False
            # A page may call the server it was loaded from, and nothing else may.
            return oname == hostname or (is_loopback(oname) and is_loopback(hostname))
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and not self._ok(dict(scope.get("headers") or [])):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b"refused: this page answers only to requests addressed to this device\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


#: What the page may load and contact: its own origin only. Scripts also need a nonce (Gradio's
#: page has inline scripts: they get this response's nonce, nothing injected later does); styles
#: may be inline (Svelte sets them; a style cannot fetch anything that img-src and font-src do not
#: allow). data: and blob: images are the page's own (icons, uploads).
CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self'; worker-src 'self' blob:; manifest-src 'self'; frame-src 'none'; "
    "child-src 'none'; object-src 'none'; form-action 'self'; base-uri 'self'; frame-ancestors 'none'"
)
#: Headers of every response besides the CSP: no DNS prefetching of the hosts links name (a DNS
#: query leaks the name to the resolver even when nothing is fetched), no referrer sent when a link
#: is clicked, no sniffing content types, not framed, no powerful features.
SECURITY_HEADERS = [
    (b"x-dns-prefetch-control", b"off"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), usb=(), payment=()"),
]
_SCRIPT = re.compile(rb"<script(?=[\s>])", re.I)


class SecurityHeaders:
    """ASGI middleware: the CSP and SECURITY_HEADERS on every HTTP response, nonces on the page's scripts."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        held: dict = {}

        async def patched(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
                headers += [(b"content-security-policy", CSP.format(nonce=nonce).encode()), *SECURITY_HEADERS]
                message = {**message, "headers": headers}
                if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    held["start"], held["body"] = message, b""  # the whole page, to add nonces
                    return
                await send(message)
            elif message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                body = _SCRIPT.sub(b'<script nonce="' + nonce.encode() + b'"', held["body"])
                start = held.pop("start")
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, patched)


_REPLACED = {b"content-security-policy", *(k for k, _ in SECURITY_HEADERS)}


def passage(library: str, pid: str):
    """GET /passage/<library>/<id>: a passage the page cited, read from this device, as plain text.

    Retrieved text is hostile: it is sent as text/plain (never sniffed as HTML: nosniff), under
    the same Content-Security-Policy and Host/Origin guard as the page; a name or id that is not
    one is a one-line 404, which echoes nothing of any file.
    """
    from fastapi.responses import PlainTextResponse

    from research import grounded

    try:
        text = grounded.passage_text(library, pid)
    except KitError as e:
        return PlainTextResponse(f"{e}\n", status_code=404)
    return PlainTextResponse(text, headers={"content-disposition": "inline"})


def build_app(demo, host: str = "127.0.0.1", auth: tuple[str, str] | None = None, **mount):
    """The ASGI app: the page mounted at / behind the Host/Origin guard."""
    import gradio as gr
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/passage/{library}/{pid}", passage, methods=["GET"])  # before the page's own
    app = gr.mount_gradio_app(
        app,
        demo,
        path="",
        ssr_mode=False,
        auth=auth,
        pwa=False,
        mcp_server=False,
        footer_links=["settings"],
        run_history=False,  # Gradio 6 keeps every event's inputs and outputs: questions and answers
        **mount,
    )
    return HostGuard(SecurityHeaders(app), {host} | LOOPBACK_NAMES, any_host=host in ("0.0.0.0", "::"))


def serve(
    demo, host: str = "127.0.0.1", port: int = 7860, listen_anywhere: bool = False, ready=None, **mount
) -> None:
    """Run the page until interrupted. Any non-loopback address needs listen_anywhere=True.

    `ready` is called once the page listens.
    """
    import uvicorn

    auth = None
    if not is_loopback(host):
        if not listen_anywhere:
            raise KitError(
                f"{host} is not this device's loopback address: other machines could reach the page; "
                "add --listen-anywhere if that is really what you want"
            )
        auth = ("research", secrets.token_urlsafe(12))
        print(
            f"WARNING: the page listens on {host}:{port} and can be reached from the network.\n"
            f"         Log in as user '{auth[0]}' with the token {auth[1]}",
            file=sys.stderr,
        )
    app = build_app(demo, host, auth, **mount)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"Chat page: http://{shown}:{port}  (Ctrl-C stops it)", flush=True)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again with the handler it found:
    # with the default one the process dies there and the private folder (atexit) stays behind.
    # Exiting through SystemExit instead runs the clean-up; SIGHUP (a closed Termux session) too.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    # At rest the page must not wake the device: an event-driven queue, housekeeping once a second.
    from research import idle

    idle.quiet(demo)
    idle.QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning"), ready).run()


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)

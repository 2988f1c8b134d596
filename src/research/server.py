"""Serve the chat page on this device only.

The page is mounted on our own FastAPI app and run by uvicorn instead of `demo.launch()`:
launch() can open a public share link (GRADIO_SHARE, Colab) and phones home for version
checks and analytics. Here nothing is shared, the bind address is explicit, analytics are
off before gradio is imported, and requests whose Host or Origin is not this device are
refused (DNS rebinding: Gradio CVE-2024-1727, Ollama CVE-2024-28224).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
import tempfile
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
    if "GRADIO_TEMP_DIR" not in os.environ:
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="research-gradio-")


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
        if origin and origin != "null":
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


def build_app(demo, host: str = "127.0.0.1", auth: tuple[str, str] | None = None, **mount):
    """The ASGI app: the page mounted at / behind the Host/Origin guard."""
    import gradio as gr
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
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
    return HostGuard(app, {host} | LOOPBACK_NAMES, any_host=host in ("0.0.0.0", "::"))


def serve(demo, host: str = "127.0.0.1", port: int = 7860, listen_anywhere: bool = False, **mount) -> None:
    """Run the page until interrupted. Any non-loopback address needs listen_anywhere=True."""
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
    uvicorn.run(app, host=host, port=port, log_level="warning")

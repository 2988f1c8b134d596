"""Serve the chat page on this device only, to whoever holds the token it printed at start.

The page is mounted on our own FastAPI app and run by uvicorn instead of `demo.launch()`:
launch() can open a public share link (GRADIO_SHARE, Colab) and phones home for version
checks and analytics. Here nothing is shared and the bind address is explicit. One ASGI guard
stands in front of every route, the kit's and Gradio's alike (Guard), and decides in this order:

1. Host and Origin: a request whose Host is not this device, or whose Origin is not the page's
   own (scheme, host and port: another local page such as JupyterLab on :8888 is another
   origin), or `Origin: null` (sandboxed frames, data: and file: pages), is refused (DNS
   rebinding: Gradio CVE-2024-1727, Ollama CVE-2024-28224; cross-site requests). A browser's
   `Sec-Fetch-Site` must say the request comes from the page itself, except a navigation to /.
2. The route: every route the app serves is in ROUTES, allowed, guarded (a check of its own)
   or refused; a path matching none is refused. Gradio's file route serves only the page's own
   private folder and never fetches a URL (`/gradio_api/file=http://...` made the server look
   the host up and fetch it); its URL proxy, uploads, monitoring, run history and the rest the
   page does not use are refused. A route a Gradio upgrade adds is refused until it is listed
   (tests/test_exposure.py fails meanwhile).
3. The token: a secret made at each start and printed in the page's address
   (`http://<random>.localhost:7860/?token=...`), as JupyterLab does, since loopback is open to
   every program of the device (every app on Android). Opening that address sets a cookie for
   the browser, under a host name made for this start (private_name: browsers would send a
   127.0.0.1 cookie to every port); programs send the `X-Research-Token` header
   (research.page.server.client does).
4. Request bodies are capped (MAX_BODY_BYTES).

Every response, refusals included, carries a Content-Security-Policy that lets the page contact
nothing but its own origin, whatever text it shows (research.page.text keeps that text from
being HTML in the first place). The page's temporary files (exports) live in a private folder
that is removed when the page stops.
"""

from __future__ import annotations

import atexit
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
from research.page import look
from research.page import sources as page_sources
from research.page.guard import LOOPBACK_NAMES, TOKEN_HEADER, Guard, is_loopback, local_addresses
from research.page.headers import SecurityHeaders


def offline_environment() -> None:
    """Turn off everything in gradio and huggingface_hub that would reach the network (the
    kit's switches, research.offline, set again: the page may run without `research` imported
    first), and everything that would open the page up."""
    from research import offline

    offline.apply()
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


def passage(library: str, pid: str):
    """GET /passage/<library>/<id>: a passage the page cited, read from this device, as plain text.

    Retrieved text is hostile: it is sent as text/plain (never sniffed as HTML: nosniff), under
    the same Content-Security-Policy and Host/Origin guard as the page; a name or id that is not
    one is a one-line 404, which echoes nothing of any file.
    """
    from fastapi.responses import PlainTextResponse

    try:
        text = page_sources.passage_text(library, pid)
    except KitError as e:
        return PlainTextResponse(f"{e}\n", status_code=404)
    return PlainTextResponse(text, headers={"content-disposition": "inline"})


def build_app(
    demo,
    host: str = "127.0.0.1",
    token: str = "",
    port: int = 7860,
    private_dir: Path | None = None,
    extra_hosts: set[str] = frozenset(),
    **mount,
):
    """The ASGI app: the page mounted at / and the kit's own routes, behind the Guard."""
    import gradio as gr
    from fastapi import FastAPI

    if not token:
        raise KitError("the page needs a token (research.page.server.new_token)")
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/passage/{library}/{pid}", passage, methods=["GET"])  # before the page's own
    app = gr.mount_gradio_app(
        app,
        demo,
        path="",
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        footer_links=["settings"],
        run_history=False,  # Gradio 6 keeps every event's inputs and outputs: questions and answers
        **mount,
    )
    allowed = {host} | LOOPBACK_NAMES | set(extra_hosts)
    if not is_loopback(host):  # --listen-anywhere: the names other machines reach this one by
        allowed |= local_addresses()
    return SecurityHeaders(Guard(app, allowed, token, port, private_dir), look.SCRIPT), app


def new_token() -> str:
    """A fresh secret for one start of the page (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def private_name() -> str:
    """A host name for one start of the page, under `.localhost` (RFC 6761: always this device;
    browsers resolve it themselves, without asking DNS): `"3f9a...c1.localhost"`.

    Browsers keep cookies by host, not by port, so a cookie set by `127.0.0.1:7860` also goes to
    every other program's server on `127.0.0.1` (any Android app may run one, and a link in an
    answer can point at it). Under a name nobody else knows, the token's cookie goes nowhere else.
    """
    return f"{secrets.token_hex(8)}.localhost"


def address(host: str, port: int, token: str, name: str = "") -> str:
    """The address to open: `address("127.0.0.1", 7860, "abc")` -> "http://127.0.0.1:7860/?token=abc";
    with `name` (private_name) the page is opened by that name where it listens on loopback."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if name and (is_loopback(shown) or host in ("0.0.0.0", "::")):
        shown = name
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/?token={token}"


def client(url: str, **kwargs):
    """A gradio_client.Client for the page at `url`, the address it printed (token and all).

    A `*.localhost` name is reached at 127.0.0.1 (the Host check takes both): outside a browser,
    such a name would be looked up in DNS, off the device.
    """
    from urllib.parse import parse_qs

    from gradio_client import Client

    parts = urlsplit(url)
    token = (parse_qs(parts.query).get("token") or [""])[0]
    netloc = parts.netloc
    if (parts.hostname or "").endswith(".localhost"):
        netloc = f"127.0.0.1:{parts.port}"
    base = f"{parts.scheme}://{netloc}/"
    kwargs.setdefault("verbose", False)
    headers = {TOKEN_HEADER: token} | kwargs.pop("headers", {})
    return Client(base, headers=headers, **kwargs)


def serve(
    demo,
    host: str = "127.0.0.1",
    port: int = 7860,
    listen_anywhere: bool = False,
    ready=None,
    allow_hosts: tuple[str, ...] = (),
    **mount,
) -> None:
    """Run the page until interrupted. Any non-loopback address needs listen_anywhere=True.

    `ready` is called once the page listens; `allow_hosts` are more names it answers to (with
    --listen-anywhere: a name other machines reach this one by).
    """
    import uvicorn

    if not is_loopback(host) and not listen_anywhere:
        raise KitError(
            f"{host} is not this device's loopback address: other machines could reach the page; "
            "add --listen-anywhere if that is really what you want"
        )
    token, name = new_token(), private_name()
    private = os.environ.get("GRADIO_TEMP_DIR")
    hosts = {h.lower() for h in allow_hosts} | {name}
    app, _ = build_app(demo, host, token, port, Path(private) if private else None, hosts, **mount)
    if not is_loopback(host):
        print(
            f"WARNING: the page listens on {host}:{port} and can be reached from the network; "
            "it answers only to this device's own addresses and names given with --allow-host, "
            "and only with its token. It speaks plain HTTP: anyone on that network can read the "
            "token and the conversation.",
            file=sys.stderr,
        )
    print(f"Chat page: {address(host, port, token, name)}  (Ctrl-C stops it)", flush=True)
    if address(host, port, token, name) != address(host, port, token):
        print(
            f"  (a browser that cannot open *.localhost names: {address(host, port, token)} works "
            "too, but there the token's cookie also goes to other programs' pages on this device)",
            flush=True,
        )
    # uvicorn stops gracefully on SIGTERM, then raises the signal again with the handler it found:
    # with the default one the process dies there and the private folder (atexit) stays behind.
    # Exiting through SystemExit instead runs the clean-up; SIGHUP (a closed Termux session) too.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    # At rest the page must not wake the device: an event-driven queue, housekeeping once a second.
    from research.page import idle

    idle.quiet(demo)
    idle.QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning"), ready).run()


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)

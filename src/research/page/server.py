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
   (`http://127.0.0.1:7860/?token=...`), as JupyterLab does, since loopback is open to every
   program of the device (every app on Android). Opening that address sets a cookie for the
   browser; programs send the `X-Research-Token` header (research.page.server.client does).
4. Request bodies are capped (MAX_BODY_BYTES).

Every response, refusals included, carries a Content-Security-Policy that lets the page contact
nothing but its own origin, whatever text it shows (research.page.text keeps that text from
being HTML in the first place). The page's temporary files (exports) live in a private folder
that is removed when the page stops.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from research.errors import KitError
from research.page import sources as page_sources

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


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


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


TOKEN_HEADER = "x-research-token"
#: Bytes a request body may have: a long conversation goes back with every question (the
#: page's history), far below this; nothing the page does uploads a file.
MAX_BODY_BYTES = 8 * 1024 * 1024

#: Every route the page's app serves, with its verdict: "allowed" (behind the Host/Origin check
#: and the token, as everything is), "guarded" (allowed, then a check of its own), "refused".
#: Paths are the routes' own templates (Starlette's), as tests/test_exposure.py reads them from
#: the app. What the page uses was read from a browser session and gradio_client's.
ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/"): ("allowed", "the page"),
    ("HEAD", "/"): ("allowed", "the page"),
    ("GET", "/config"): ("allowed", "the page's layout"),
    ("GET", "/config/"): ("allowed", "the page's layout"),
    ("GET", "/assets/{path:path}"): ("allowed", "the page's scripts and styles"),
    ("GET", "/static/{path:path}"): ("allowed", "the page's scripts"),
    ("GET", "/svelte/{path:path}"): ("allowed", "the page's scripts"),
    ("GET", "/favicon.ico"): ("allowed", "the icon"),
    ("GET", "/theme.css"): ("allowed", "the theme"),
    ("GET", "/gradio_api/theme.css"): ("allowed", "the theme"),
    ("GET", "/robots.txt"): ("allowed", "says: index nothing"),
    ("GET", "/gradio_api/info"): ("allowed", "the API's description (gradio_client)"),
    ("GET", "/gradio_api/info/"): ("allowed", "the API's description (gradio_client)"),
    ("POST", "/gradio_api/queue/join"): ("allowed", "a question, a rating, an export"),
    ("GET", "/gradio_api/queue/data"): ("allowed", "the streamed answer"),
    ("GET", "/gradio_api/queue/status"): ("allowed", "the queue's length"),
    ("POST", "/gradio_api/cancel"): ("allowed", "stop"),
    ("POST", "/gradio_api/reset"): ("allowed", "a stopped stream's end"),
    ("POST", "/gradio_api/reset/"): ("allowed", "a stopped stream's end"),
    ("GET", "/gradio_api/heartbeat/{session_hash}"): ("allowed", "a session's heartbeat"),
    ("POST", "/gradio_api/run/{api_name}"): ("allowed", "events outside the queue (stop, clear)"),
    ("POST", "/gradio_api/run/{api_name}/"): ("allowed", "events outside the queue"),
    ("POST", "/gradio_api/api/{api_name}"): ("allowed", "the same events by their API names"),
    ("POST", "/gradio_api/api/{api_name}/"): ("allowed", "the same events by their API names"),
    ("POST", "/gradio_api/call/{api_name}"): ("allowed", "the documented HTTP API"),
    ("POST", "/gradio_api/call/{api_name}/"): ("allowed", "the documented HTTP API"),
    ("GET", "/gradio_api/call/{api_name}/{event_id}"): ("allowed", "the documented HTTP API's results"),
    ("GET", "/gradio_api/file={path_or_url:path}"): ("guarded", "exported files: the private folder only"),
    ("HEAD", "/gradio_api/file={path_or_url:path}"): ("guarded", "exported files: the private folder only"),
    ("GET", "/passage/{library}/{pid}"): ("allowed", "a cited passage, as plain text"),
    # Refused: what the page never uses, and what would reach off the device or read files.
    ("GET", "/gradio_api/proxy={url_path:path}"): ("refused", "fetches a URL on the server's behalf"),
    ("HEAD", "/gradio_api/proxy={url_path:path}"): ("refused", "fetches a URL on the server's behalf"),
    ("GET", "/gradio_api/file/{path:path}"): ("refused", "a second file route; the page uses file="),
    ("POST", "/gradio_api/upload"): ("refused", "the page takes no uploads"),
    ("GET", "/gradio_api/upload_progress"): ("refused", "the page takes no uploads"),
    ("POST", "/gradio_api/process_recording"): ("refused", "no microphone or camera"),
    ("POST", "/gradio_api/stream/{event_id}"): ("refused", "no media streams"),
    ("POST", "/gradio_api/stream/{event_id}/close"): ("refused", "no media streams"),
    ("GET", "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist.m3u8"): ("refused", "no media"),
    ("GET", "/gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}"): (
        "refused",
        "no media",
    ),
    ("GET", "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file"): ("refused", "no media"),
    ("POST", "/login"): ("refused", "no Gradio login: the token stands for it"),
    ("POST", "/login/"): ("refused", "no Gradio login: the token stands for it"),
    ("GET", "/logout"): ("refused", "no Gradio login"),
    ("GET", "/gradio_api/user"): ("refused", "no Gradio login"),
    ("GET", "/gradio_api/user/"): ("refused", "no Gradio login"),
    ("GET", "/gradio_api/login_check"): ("refused", "no Gradio login"),
    ("GET", "/gradio_api/login_check/"): ("refused", "no Gradio login"),
    ("GET", "/gradio_api/token"): ("refused", "Hugging Face login: none here"),
    ("GET", "/gradio_api/token/"): ("refused", "Hugging Face login: none here"),
    ("GET", "/gradio_api/app_id"): ("refused", "Spaces only"),
    ("GET", "/gradio_api/app_id/"): ("refused", "Spaces only"),
    ("GET", "/gradio_api/deep_link"): ("refused", "sharing links: nothing is shared"),
    ("GET", "/gradio_api/dev/reload"): ("refused", "development reloads"),
    ("GET", "/gradio_api/runs"): ("refused", "run history: questions and answers are not kept"),
    ("GET", "/gradio_api/runs/"): ("refused", "run history"),
    ("GET", "/gradio_api/openapi.json"): ("refused", "the API is described by /gradio_api/info"),
    ("GET", "/openapi.json"): ("refused", "the API is described by /gradio_api/info"),
    ("HEAD", "/openapi.json"): ("refused", "the API is described by /gradio_api/info"),
    ("GET", "/gradio_api/custom_component/{id}/{environment}/{type}/{file_name}"): ("refused", "none used"),
    ("GET", "/gradio_api/startup-events"): ("refused", "the page starts none"),
    ("POST", "/gradio_api/component_server"): ("refused", "no component uses it"),
    ("POST", "/gradio_api/component_server/"): ("refused", "no component uses it"),
    ("GET", "/gradio_api/call/v2/{api_name}/{event_id}"): ("refused", "the page uses the queue"),
    ("POST", "/gradio_api/call/v2/{api_name}"): ("refused", "the page uses the queue"),
    ("POST", "/gradio_api/call/v2/{api_name}/"): ("refused", "the page uses the queue"),
    ("POST", "/gradio_api/vibe-edit"): ("refused", "Gradio's AI editor calls a remote model"),
    ("POST", "/gradio_api/vibe-edit/"): ("refused", "Gradio's AI editor calls a remote model"),
    ("POST", "/gradio_api/undo-vibe-edit"): ("refused", "Gradio's AI editor"),
    ("POST", "/gradio_api/undo-vibe-edit/"): ("refused", "Gradio's AI editor"),
    ("GET", "/gradio_api/vibe-code"): ("refused", "Gradio's AI editor"),
    ("GET", "/gradio_api/vibe-code/"): ("refused", "Gradio's AI editor"),
    ("POST", "/gradio_api/vibe-code"): ("refused", "Gradio's AI editor"),
    ("POST", "/gradio_api/vibe-code/"): ("refused", "Gradio's AI editor"),
    ("POST", "/gradio_api/vibe-starter-queries"): ("refused", "Gradio's AI editor"),
    ("POST", "/gradio_api/vibe-starter-queries/"): ("refused", "Gradio's AI editor"),
    ("GET", "/monitoring"): ("refused", "Gradio's usage dashboard"),
    ("GET", "/monitoring/summary"): ("refused", "Gradio's usage dashboard"),
    ("GET", "/monitoring/{key}"): ("refused", "Gradio's usage dashboard"),
    ("GET", "/manifest.json"): ("refused", "no app install (pwa is off)"),
    ("GET", "/pwa_icon"): ("refused", "no app install"),
    ("GET", "/pwa_icon/{size}"): ("refused", "no app install"),
}


def _pattern(template: str) -> re.Pattern:
    """A route template as a regular expression: `{x}` is one segment, `{x:path}` the rest."""
    out, pos = [], 0
    for m in re.finditer(r"\{([a-zA-Z_]+)(:path)?\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(".*" if m.group(2) else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z", re.S)


_COMPILED = [(method, _pattern(path), path) for (method, path) in ROUTES]


def route_of(method: str, path: str) -> tuple[str, str] | None:
    """The (method, template) of ROUTES that serves this request, or None: refused.

    `route_of("GET", "/gradio_api/file=/tmp/x")` -> ("GET", "/gradio_api/file={path_or_url:path}").
    Paths are matched as the app matches them (case-sensitive, decoded once), allowed ones first.
    """
    found = [(m, t) for m, rx, t in _COMPILED if m == method and rx.match(path)]
    found.sort(key=lambda mt: ROUTES[mt][0] != "allowed")  # a literal allowed route before a pattern
    refused = [mt for mt in found if ROUTES[mt][0] == "refused"]
    return refused[0] if refused else (found[0] if found else None)


def unquoted(text: str) -> str:
    """`text` percent-decoded until it no longer changes (an attacker may encode twice)."""
    from urllib.parse import unquote

    for _ in range(8):
        once = unquote(text)
        if once == text:
            break
        text = once
    return text


_URL_LIKE = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.\-]*:|[/\\]{2})")


def file_allowed(raw: str, folder: Path | None) -> bool:
    """Whether Gradio's file route may serve `raw` (its `file=` part): a file inside the page's
    private folder, never a URL in any spelling (`http:`, `HTTP%3A`, `//host`, `\\\\host`, ...).

    `file_allowed("http://example.com/x", f)` -> False; `file_allowed(f"{f}/a.md", f)` -> True if
    the file is there.
    """
    if folder is None:
        return False
    for form in (raw, unquoted(raw)):
        if _URL_LIKE.match(form) or "://" in form or "\x00" in form:
            return False
    try:
        target = Path(unquoted(raw)).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return False
    return target.is_file() and target.is_relative_to(folder.resolve())


def local_addresses() -> set[str]:
    """Every address of this device's own interfaces (the names a LAN client may use for it)."""
    import psutil

    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.add(a.address.split("%")[0].lower())
    return out


class Guard:
    """ASGI middleware in front of every route: Host and Origin, the route's verdict, the token,
    the body's size (the module's docstring says why, in that order)."""

    def __init__(
        self,
        app,
        allowed_hosts: set[str],
        token: str,
        port: int,
        private_dir: Path | None = None,
    ):
        self.app, self.allowed = app, {h.lower().strip("[]") for h in allowed_hosts}
        self.token, self.port, self.private_dir = token, port, private_dir
        self.cookie = f"research_token_{port}"

    def _origin_ok(self, headers: dict[bytes, bytes], scope) -> bool:
        host = headers.get(b"host", b"").decode("latin-1").lower()
        try:
            parts = urlsplit(f"//{host}")
            hostname, port = parts.hostname or "", parts.port
        except ValueError:
            return False
        if not (hostname in self.allowed or is_loopback(hostname)):
            return False
        origin = headers.get(b"origin", b"").decode("latin-1").lower()
        if origin == "null":  # a sandboxed frame, a data: or file: page: foreign, whoever it is
            return False
        if origin:
            try:
                o = urlsplit(origin)
                oport = o.port or {"http": 80, "https": 443}.get(o.scheme)
            except ValueError:
                return False
            scheme = scope.get("scheme", "http")
            # A page may call the server it was loaded from (its scheme, host and port), and
            # nothing else may: not another site, not another program's page on this device.
            same_host = o.hostname == hostname or (is_loopback(o.hostname or "") and is_loopback(hostname))
            if not (o.scheme == scheme and same_host and oport == (port or self.port)):
                return False
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        mode = headers.get(b"sec-fetch-mode", b"").decode("latin-1").lower()
        if site and site not in ("same-origin", "none"):
            return mode == "navigate" and scope.get("path") == "/"
        return True

    def _token(self, headers: dict[bytes, bytes], scope) -> str:
        """The token the request carries: "header", "cookie", "query" or "" (none, or a wrong one)."""
        import secrets
        from http.cookies import SimpleCookie
        from urllib.parse import parse_qs

        given = headers.get(TOKEN_HEADER.encode(), b"").decode("latin-1")
        if given and secrets.compare_digest(given, self.token):
            return "header"
        jar = SimpleCookie()
        try:
            jar.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed cookie header is no token
            jar = SimpleCookie()
        if self.cookie in jar and secrets.compare_digest(jar[self.cookie].value, self.token):
            return "cookie"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(secrets.compare_digest(t, self.token) for t in query.get("token", [])):
            return "query"
        return ""

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self._origin_ok(headers, scope):
            return await _refuse(
                scope, send, 403, "refused: this page answers only to itself, on this device"
            )
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        route = route_of(method, scope["path"])
        if route is None or ROUTES[route][0] == "refused":
            return await _refuse(scope, send, 404, "not found")
        how = self._token(headers, scope)
        if not how:
            return await _refuse(
                scope,
                send,
                401,
                "this page needs its token: open the address it printed when it started (…/?token=…)",
            )
        if ROUTES[route][0] == "guarded":
            raw = scope["path"].split("file=", 1)[1]
            if not file_allowed(raw, self.private_dir):
                return await _refuse(scope, send, 404, "not found")
        if how == "query" and route == ("GET", "/") and scope["type"] == "http":
            # The printed address: the browser keeps the token in a cookie of this port, and the
            # address bar loses it.
            cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", b"/"),
                        (b"set-cookie", cookie.encode()),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        length = headers.get(b"content-length", b"0").decode("latin-1")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return await _refuse(scope, send, 413, f"a request may carry at most {MAX_BODY_BYTES} bytes")
        await self.app(scope, _capped(receive), send)


def _capped(receive):
    """`receive` that stops a body longer than MAX_BODY_BYTES (chunked: no Content-Length)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise KitError(f"a request may carry at most {MAX_BODY_BYTES} bytes")
        return message

    return wrapped


async def _refuse(scope, send, status: int, text: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def app_routes(app) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, read from the app itself: Gradio's routes
    (mounted, and its included API router) with the kit's own."""
    out: list[tuple[str, str]] = []

    def walk(routes, prefix: str) -> None:
        for r in routes:
            inner = getattr(r, "original_router", None)
            if inner is not None:  # FastAPI's included router (Gradio's /gradio_api routes)
                walk(inner.routes, prefix)
                continue
            path = getattr(r, "path", "")
            if type(r).__name__ == "Mount":
                walk(r.routes, prefix + path)
                continue
            websocket = type(r).__name__ in ("WebSocketRoute", "APIWebSocketRoute")
            methods = getattr(r, "methods", None) or ({"GET"} if websocket else set())
            for m in sorted(methods):
                out.append((m, (prefix + path) or "/"))

    walk(app.routes, "")
    return out


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
    return SecurityHeaders(Guard(app, allowed, token, port, private_dir)), app


def new_token() -> str:
    """A fresh secret for one start of the page (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def address(host: str, port: int, token: str) -> str:
    """The address to open: `address("127.0.0.1", 7860, "abc")` -> "http://127.0.0.1:7860/?token=abc"."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/?token={token}"


def client(url: str, **kwargs):
    """A gradio_client.Client for the page at `url`, the address it printed (token and all)."""
    from urllib.parse import parse_qs

    from gradio_client import Client

    parts = urlsplit(url)
    token = (parse_qs(parts.query).get("token") or [""])[0]
    base = f"{parts.scheme}://{parts.netloc}/"
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
    token = new_token()
    private = os.environ.get("GRADIO_TEMP_DIR")
    app, _ = build_app(
        demo, host, token, port, Path(private) if private else None, {h.lower() for h in allow_hosts}, **mount
    )
    if not is_loopback(host):
        print(
            f"WARNING: the page listens on {host}:{port} and can be reached from the network; "
            "it answers only to this device's own addresses and names given with --allow-host, "
            "and only with its token.",
            file=sys.stderr,
        )
    print(f"Chat page: {address(host, port, token)}  (Ctrl-C stops it)", flush=True)
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

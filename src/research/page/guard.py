"""The guard in front of every route of the page: Host and Origin, the route's verdict, the
token, the body's size (research.page.server says why, in that order), and the inventory of routes
it judges by (ROUTES), read from the app itself by app_routes.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


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
    try:  # the path Gradio opens: the request's path decoded once (as `raw` is), not once more
        target = Path(raw).resolve(strict=True)
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


def cookie_values(headers: dict[bytes, bytes], name: str) -> list[str]:
    """Every value of the cookie `name` in the request's Cookie header, read pair by pair.

    Python's SimpleCookie stops at the first pair it cannot read, so another local web app's
    ordinary cookie (`prefs={"theme":"dark"}`, a value with a space) would hide the token and lock
    the user out: `cookie_values({b"cookie": b'a={"x":1}; t=v'}, "t")` -> ["v"].
    """
    out = []
    for pair in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key.strip() == name:
            out.append(value.strip().strip('"'))
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
        from urllib.parse import parse_qs

        def same(given: str) -> bool:  # bytes: compare_digest refuses a str that is not ASCII
            return secrets.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode())

        given = headers.get(TOKEN_HEADER.encode(), b"").decode("latin-1")
        if given and same(given):
            return "header"
        if any(same(v) for v in cookie_values(headers, self.cookie)):
            return "cookie"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(same(t) for t in query.get("token", [])):
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
        too_long = f"a request may carry at most {MAX_BODY_BYTES} bytes"
        length = headers.get(b"content-length")
        if length is not None:  # the server holds the body to its stated length
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return await _refuse(scope, send, 413, too_long)
        elif scope["type"] == "http":  # chunked: read up to the cap here, before the app starts
            body = await _read_capped(receive)
            if body is None:
                return await _refuse(scope, send, 413, too_long)
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_capped(receive) -> bytes | None:
    """The request's whole body, or None when it is longer than MAX_BODY_BYTES (or the client
    left): refused before the app sees any of it, so no half-answered request is left behind."""
    parts, seen = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        seen += len(parts[-1])
        if seen > MAX_BODY_BYTES:
            return None
        if not message.get("more_body"):
            return b"".join(parts)


def _replay(body: bytes, receive):
    """`receive` that hands the app the body read already, then waits as the original would."""
    sent = False

    async def wrapped():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

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

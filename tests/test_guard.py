"""The page's guard, driven as ASGI middleware without a server: every verdict against a fixed,
hand-written expectation (status, body and headers spelled out), never against the guard's own
helpers. tests/test_exposure.py checks the same guard in front of the launched page.
"""

import asyncio
import socket
from types import SimpleNamespace

import pytest

from research.page import guard

TOKEN = "0123456789abcdef0123456789abcdef"
PORT = 7860
HOST = (b"host", b"127.0.0.1:7860")
WITH_TOKEN = (b"x-research-token", TOKEN.encode())
MIB8 = 8 * 1024 * 1024


def call(
    path="/",
    headers=(HOST, WITH_TOKEN),
    *,
    method="GET",
    kind="http",
    query=b"",
    scheme=None,
    body=None,
    allowed=("127.0.0.1", "localhost", "::1", "[::1]"),
    port=PORT,
    private_dir=None,
    read=0,
):
    """One request through a Guard around a stub app: (status or "app", body, headers, app saw).

    `body` is the list of receive() messages (default: one empty request); `read` is how many
    times the stub app calls receive()."""
    seen = {}

    async def app(scope, receive, send):
        seen["scope"] = scope
        seen["received"] = [await receive() for _ in range(read)]
        await send({"type": "from the app"})

    messages = list(body if body is not None else [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": kind, "path": path, "headers": list(headers)}
    if query is not None:  # None: a scope without the key
        scope["query_string"] = query
    if kind == "http" and method is not None:
        scope["method"] = method
    if scheme:
        scope["scheme"] = scheme
    g = guard.Guard(app, set(allowed), TOKEN, port, private_dir)
    asyncio.run(g(scope, receive, send))
    if seen:
        assert sent == [{"type": "from the app"}], sent  # what the app sends goes out, and only that
        return "app", None, None, seen
    if kind == "websocket":
        return sent, None, None, seen
    start, end = sent
    assert start["type"] == "http.response.start" and end["type"] == "http.response.body"
    return start["status"], end["body"], start["headers"], seen


def refused(status: int, text: str):
    body = (text + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    return status, body, headers, {}


FOREIGN = refused(403, "refused: this page answers only to itself, on this device")
NOT_FOUND = refused(404, "not found")
NO_TOKEN = refused(401, "this page needs its token: open the address it printed when it started (…/?token=…)")
TOO_LONG = refused(413, "a request may carry at most 8388608 bytes")


# --- Loopback, routes, decoding, cookies: the small pure pieces --------------------------------------


@pytest.mark.parametrize(
    "host, expected",
    [
        ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
        ("10.0.0.1", False), ("evil.example", False), ("localhost.evil.example", False), ("", False),
        ("::2", False), ("[127.0.0.1]", True), ("X127.0.0.1", False), ("[::1]X", False),
    ],
)  # fmt: skip
def test_is_loopback(host, expected):
    assert guard.is_loopback(host) is expected


SEGMENT = "/gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}"


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", "/", ("GET", "/")),
        ("HEAD", "/", ("HEAD", "/")),
        ("POST", "/", None),  # the method is part of the route
        ("GET", "/config", ("GET", "/config")),
        ("GET", "/CONFIG", None),  # case-sensitive, as the app
        ("GET", "/config/x", None),  # anchored at the end
        ("GET", "/x/config", None),  # and at the start
        ("GET", "/assets/a/b.js", ("GET", "/assets/{path:path}")),
        ("GET", "/assets/a\nb", ("GET", "/assets/{path:path}")),  # a path part may hold a newline
        ("GET", "/gradio_api/heartbeat/abc", ("GET", "/gradio_api/heartbeat/{session_hash}")),
        ("GET", "/gradio_api/heartbeat/a/b", None),  # {x} is one segment
        ("GET", "/gradio_api/heartbeat/", None),  # of one character at least
        ("GET", "/gradio_api/file=/tmp/x", ("GET", "/gradio_api/file={path_or_url:path}")),
        ("GET", "/gradio_api/proxy=http://e.x/a", ("GET", "/gradio_api/proxy={url_path:path}")),
        ("POST", "/gradio_api/upload", ("POST", "/gradio_api/upload")),
        ("GET", "/gradio_api/file/etc/passwd", ("GET", "/gradio_api/file/{path:path}")),
        ("GET", "/monitoring/summary", ("GET", "/monitoring/summary")),  # the literal route first
        ("GET", "/nowhere", None),
        ("GET", "/gradio_api/queue/join", None),  # POST only
        ("GET", "/gradio_api/stream/a/b/c/x.ts", ("GET", SEGMENT)),
    ],
)  # fmt: skip
def test_route_of(method, path, expected):
    assert guard.route_of(method, path) == expected


@pytest.mark.parametrize(
    "route, verdict",
    [
        (("GET", "/"), "allowed"), (("POST", "/gradio_api/queue/join"), "allowed"),
        (("GET", "/gradio_api/file={path_or_url:path}"), "guarded"),
        (("GET", "/gradio_api/proxy={url_path:path}"), "refused"),
        (("POST", "/gradio_api/upload"), "refused"),
        (("GET", "/gradio_api/runs"), "refused"), (("POST", "/login"), "refused"),
        (("GET", "/openapi.json"), "refused"), (("POST", "/gradio_api/vibe-edit"), "refused"),
    ],
)  # fmt: skip
def test_the_verdicts_that_matter(route, verdict):
    assert guard.ROUTES[route][0] == verdict


def test_a_refused_route_wins_and_an_allowed_literal_comes_before_a_pattern(monkeypatch):
    """The rule route_of keeps for any table: a path that a refused route also matches is refused;
    otherwise an allowed route is chosen before a guarded one."""
    routes = {
        ("GET", "/a/{x}"): ("allowed", ""),
        ("GET", "/a/b"): ("refused", ""),
        ("GET", "/c/{x:path}"): ("guarded", ""),
        ("GET", "/c/d"): ("allowed", ""),
    }
    monkeypatch.setattr(guard, "ROUTES", routes)
    monkeypatch.setattr(guard, "_COMPILED", [(m, guard._pattern(p), p) for (m, p) in routes])
    assert guard.route_of("GET", "/a/b") == ("GET", "/a/b")
    assert guard.route_of("GET", "/a/z") == ("GET", "/a/{x}")
    assert guard.route_of("GET", "/c/d") == ("GET", "/c/d")
    assert guard.route_of("GET", "/c/d/e") == ("GET", "/c/{x:path}")


def test_a_route_template_as_a_pattern():
    rx = guard._pattern("/a/{Name_x}/b/{rest:path}")
    assert rx.match("/a/x/b/c/d") and rx.match("/a/x/b/")
    assert rx.match("/a/x/b/c\nd")  # a path part may hold a newline
    assert not rx.match("/a/x/y/b/c")  # {x} is one segment
    assert not rx.match("/a//b/c")  # of one character at least
    assert not rx.match("/a/x/bb/c") and not rx.match("/A/x/b/c")
    assert guard._pattern("/config").match("/config") and not guard._pattern("/config").match("/config/x")
    assert guard._pattern("/{x}.{ext}").match("/a.b") and not guard._pattern("/{x}.{ext}").match("/a/b.c")


def test_an_allowed_pattern_comes_before_a_guarded_literal(monkeypatch):
    routes = {("GET", "/c/d"): ("guarded", ""), ("GET", "/c/{x:path}"): ("allowed", "")}
    monkeypatch.setattr(guard, "ROUTES", routes)
    monkeypatch.setattr(guard, "_COMPILED", [(m, guard._pattern(p), p) for (m, p) in routes])
    assert guard.route_of("GET", "/c/d") == ("GET", "/c/{x:path}")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a%252Fb", "a/b"),
        ("%" + "25" * 7 + "41", "A"),  # encoded eight times: decoded eight times
        ("%" + "25" * 8 + "41", "%41"),  # nine: the ninth is left (and refused as a URL if it is one)
        ("plain", "plain"),
        ("%zz", "%zz"),
    ],
)
def test_unquoted(text, expected):
    assert guard.unquoted(text) == expected


@pytest.mark.parametrize(
    "cookie, expected",
    [
        (b'a={"x":1}; t=v', ["v"]),
        (b"t=v", ["v"]),
        (b't="v"', ["v"]),
        (b" t = v ;x=y", ["v"]),
        (b"t=v; t=w", ["v", "w"]),
        (b"t=a=b", ["a=b"]),
        (b"tt=v; t", []),
        (b"t=\xe9", ["\xe9"]),
        (b't=X"v"X', ['X"v"X']),  # only quotes come off, and only at the ends
        (b"", []),
    ],
)
def test_cookie_values(cookie, expected):
    assert guard.cookie_values({b"cookie": cookie}, "t") == expected


def test_no_cookie_header():
    assert guard.cookie_values({}, "t") == []


def test_local_addresses(monkeypatch):
    import psutil

    addr = SimpleNamespace
    fake = {
        "lo": [addr(family=socket.AF_INET, address="127.0.0.1"), addr(family=socket.AF_INET6, address="::1")],
        "eth0": [
            addr(family=socket.AF_INET, address="192.168.1.5"),
            addr(family=socket.AF_INET6, address="FE80::ABCD%eth0"),
            addr(family=getattr(socket, "AF_PACKET", 17), address="aa:bb:cc:dd:ee:ff"),
        ],
    }
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: fake)
    assert guard.local_addresses() == {"127.0.0.1", "::1", "192.168.1.5", "fe80::abcd"}


# --- file=: the private folder only, never a URL ------------------------------------------------------


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The page's private folder, the working folder too (so a relative path lands in it)."""
    private = tmp_path / "private"
    private.mkdir()
    monkeypatch.chdir(private)
    return private


def test_a_file_in_the_private_folder_is_served(folder):
    (folder / "a.md").write_text("x")
    assert guard.file_allowed(f"{folder}/a.md", folder) is True
    assert guard.file_allowed("a.md", folder) is True  # relative: resolved as Gradio opens it


def test_no_private_folder_serves_nothing(folder):
    (folder / "a.md").write_text("x")
    assert guard.file_allowed(f"{folder}/a.md", None) is False


def test_outside_the_folder_a_folder_or_a_missing_file_is_not_served(folder, tmp_path):
    (tmp_path / "secret").write_text("x")
    (folder / "sub").mkdir()
    (folder / "link").symlink_to(tmp_path / "secret")
    assert guard.file_allowed(str(tmp_path / "secret"), folder) is False
    assert guard.file_allowed(f"{folder}/../secret", folder) is False
    assert guard.file_allowed(f"{folder}/link", folder) is False  # a link out of the folder
    assert guard.file_allowed(f"{folder}/sub", folder) is False
    assert guard.file_allowed(f"{folder}/missing", folder) is False


@pytest.mark.parametrize(
    "name, raw",
    [
        ("x:y", "x:y"),  # a scheme
        (" x:y", " x:y"),  # after blanks
        ("a+b.c-d:e", "a+b.c-d:e"),
        ("\\\\host", "\\\\host"),  # \\host
        ("x%3Ay", "x%3Ay"),  # a scheme once decoded
        ("x%00", "x%00"),  # a NUL once decoded
        ("a:", "a://b"),  # :// anywhere
        ("a%3A", "a%3A//b"),
    ],
)
def test_a_url_in_any_spelling_is_not_served_even_when_such_a_file_exists(folder, name, raw):
    """Each spelling names a real file in the folder, so only the URL check can refuse it."""
    (folder / name).mkdir() if raw.endswith("//b") else (folder / name).write_text("x")
    if raw.endswith("//b"):
        (folder / name / "b").write_text("x")
    assert guard.file_allowed(raw, folder) is False


def test_a_url_after_the_folders_name_is_not_served(folder):
    (folder / "a:").mkdir()
    (folder / "a:" / "b").write_text("x")
    assert guard.file_allowed(f"{folder}/a:/b", folder) is True  # a colon alone is a file name
    assert guard.file_allowed(f"{folder}/a://b", folder) is False  # "://" anywhere is a URL


def test_an_absolute_path_with_two_slashes_is_not_served(folder):
    (folder / "a.md").write_text("x")
    assert guard.file_allowed(f"/{folder}/a.md", folder) is False  # //tmp/...: a host to a browser


def test_a_path_that_cannot_be_resolved_is_not_served(folder, monkeypatch):
    from pathlib import Path

    for error in (OSError, RuntimeError, ValueError):

        def broken(self, strict=False, error=error):
            raise error("no")

        monkeypatch.setattr(Path, "resolve", broken)
        assert guard.file_allowed("a.md", folder) is False


# --- The guard in front of the app ------------------------------------------------------------------


def test_a_request_with_its_token_from_this_device_reaches_the_app():
    status, _, _, seen = call("/config")
    assert status == "app" and seen["scope"]["path"] == "/config"


def test_what_is_not_http_passes_straight_through():
    startup = [{"type": "lifespan.startup"}]
    status, _, _, seen = call("/", headers=(), kind="lifespan", body=startup, read=1)
    assert status == "app" and seen["scope"]["type"] == "lifespan" and seen["received"] == startup


def test_a_scope_without_method_or_query_string_is_a_plain_get():
    assert call("/config", method=None, query=None)[0] == "app"
    assert call("/config", (HOST,), query=None) == NO_TOKEN


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example",
        b"evil.example:7860",
        b"localhost:abc",
        b"",
        b"10.0.0.1:7860",
        b"localhost.evil.example",
    ],
)
def test_a_foreign_or_broken_host_is_refused(host):
    assert call("/config", ((b"host", host), WITH_TOKEN)) == FOREIGN


def test_no_host_header_is_refused():
    assert call("/config", (WITH_TOKEN,)) == FOREIGN


@pytest.mark.parametrize("host", [b"localhost:7860", b"LOCALHOST:7860", b"[::1]:7860", b"127.0.0.2"])
def test_a_loopback_host_is_accepted(host):
    assert call("/config", ((b"host", host), WITH_TOKEN))[0] == "app"


def test_the_pages_own_name_is_accepted_whatever_its_case_or_brackets():
    allowed = ("ABCD.localhost", "[fe80::1]")
    for host in (b"abcd.localhost:7860", b"[fe80::1]:7860", b"ABCD.LOCALHOST"):
        assert call("/config", ((b"host", host), WITH_TOKEN), allowed=allowed)[0] == "app", host
    assert call("/config", ((b"host", b"other.localhost"), WITH_TOKEN), allowed=allowed) == FOREIGN


@pytest.mark.parametrize(
    "host, origin, scheme, port",
    [
        (b"localhost:7860", b"http://localhost:7860", None, PORT),
        (b"localhost:7860", b"HTTP://LOCALHOST:7860", None, PORT),
        (b"localhost:7860", b"http://127.0.0.1:7860", None, PORT),  # both loopback
        (b"localhost", b"http://localhost:7860", None, PORT),  # no port in Host: the page's own
        (b"localhost", b"http://localhost", None, 80),
        (b"localhost", b"https://localhost", "https", 443),
        (b"localhost:7860", b"https://localhost:7860", "https", PORT),
    ],
)
def test_the_page_calling_itself_is_accepted(host, origin, scheme, port):
    headers = ((b"host", host), (b"origin", origin), WITH_TOKEN)
    assert call("/config", headers, scheme=scheme, port=port)[0] == "app"


@pytest.mark.parametrize(
    "host, origin, scheme, port",
    [
        (b"localhost:7860", b"null", None, PORT),
        (b"localhost:7860", b"http://evil.example:7860", None, PORT),
        (b"localhost:7860", b"http://localhost:7861", None, PORT),  # another program on this device
        (b"localhost:7860", b"https://localhost:7860", None, PORT),  # another scheme
        (b"localhost:7860", b"http://localhost:7860", "https", PORT),
        (b"localhost", b"http://localhost", None, PORT),  # port 80 is not the page's
        (b"localhost", b"https://localhost", None, 443),
        (b"localhost:7860", b"http://localhost:x", None, PORT),
        (b"abcd.localhost:7860", b"http://127.0.0.1:7860", None, PORT),  # one name is not loopback
        (b"localhost:7860", b"ftp://localhost:7860", None, PORT),
    ],
)
def test_a_call_from_another_origin_is_refused(host, origin, scheme, port):
    headers = ((b"host", host), (b"origin", origin), WITH_TOKEN)
    allowed = ("127.0.0.1", "localhost", "abcd.localhost")
    assert call("/config", headers, scheme=scheme, port=port, allowed=allowed) == FOREIGN


@pytest.mark.parametrize(
    "site, mode, path, reaches",
    [
        (b"same-origin", b"cors", "/config", True),
        (b"Same-Origin", b"cors", "/config", True),
        (b"none", b"navigate", "/config", True),
        (b"cross-site", b"navigate", "/", True),  # a link from elsewhere opens the page
        (b"cross-site", b"Navigate", "/", True),
        (b"cross-site", b"cors", "/", False),
        (b"cross-site", b"navigate", "/config", False),
        (b"same-site", b"no-cors", "/config", False),  # another port of this device is another site
    ],
)
def test_fetch_metadata(site, mode, path, reaches):
    headers = (HOST, (b"sec-fetch-site", site), (b"sec-fetch-mode", mode), WITH_TOKEN)
    assert (call(path, headers)[0] == "app") is reaches
    if not reaches:
        assert call(path, headers) == FOREIGN


@pytest.mark.parametrize("path, method", [("/nowhere", "GET"), ("/gradio_api/upload", "POST"), ("/", "POST")])
def test_a_refused_or_unknown_route_is_not_found(path, method):
    assert call(path, method=method) == NOT_FOUND


def test_the_host_is_checked_before_the_route():
    assert call("/nowhere", ((b"host", b"evil.example"), WITH_TOKEN)) == FOREIGN


@pytest.mark.parametrize(
    "headers, query",
    [
        ((HOST,), b""),
        ((HOST, (b"x-research-token", b"wrong")), b""),
        ((HOST, (b"x-research-token", TOKEN[:-1].encode())), b""),
        ((HOST, (b"x-research-token", "é".encode("latin-1"))), b""),  # not ASCII: 401, not a crash
        ((HOST, (b"cookie", f"research_token_7861={TOKEN}".encode())), b""),  # another port's cookie
        ((HOST, (b"cookie", b"research_token_7860=wrong")), b""),
        ((HOST,), b"token=wrong"),
        ((HOST,), f"tok={TOKEN}".encode()),
    ],
)
def test_without_the_right_token_nothing_is_served(headers, query):
    assert call("/config", headers, query=query) == NO_TOKEN


@pytest.mark.parametrize(
    "headers, query",
    [
        ((HOST, WITH_TOKEN), b""),
        ((HOST, (b"x-research-token", b"wrong"), (b"cookie", f"research_token_7860={TOKEN}".encode())), b""),
        ((HOST, (b"cookie", f'x={{"a":1}}; research_token_7860="{TOKEN}"'.encode())), b""),
        ((HOST, (b"cookie", f"research_token_7860=old; research_token_7860={TOKEN}".encode())), b""),
        ((HOST, (b"cookie", b"research_token_7860=wrong")), f"a=1&token={TOKEN}".encode()),
        ((HOST,), f"token=wrong&token={TOKEN}".encode()),
    ],
)
def test_the_token_in_a_header_a_cookie_or_the_address_is_accepted(headers, query):
    assert call("/config", headers, query=query)[0] == "app"


def test_the_printed_address_sets_the_cookie_and_sends_the_browser_to_the_page():
    status, body, headers, seen = call("/", (HOST,), query=f"token={TOKEN}".encode())
    assert (status, body, seen) == (303, b"", {})
    assert headers == [
        (b"location", b"/"),
        (b"set-cookie", f"research_token_7860={TOKEN}; HttpOnly; SameSite=Strict; Path=/".encode()),
        (b"content-length", b"0"),
    ]


def test_the_cookie_is_named_after_the_port():
    status, _, headers, _ = call("/", (HOST,), query=f"token={TOKEN}".encode(), port=8001)
    assert status == 303 and headers[1][1].startswith(b"research_token_8001=")


@pytest.mark.parametrize(
    "path, method, headers",
    [
        ("/", "GET", (HOST, WITH_TOKEN)),  # the token came in a header: no redirect
        ("/", "HEAD", (HOST,)),  # only GET
        ("/config", "GET", (HOST,)),  # only the page itself
    ],
)
def test_no_redirect_but_for_the_printed_address(path, method, headers):
    query = f"token={TOKEN}".encode() if WITH_TOKEN not in headers else b""
    assert call(path, headers, method=method, query=query)[0] == "app"


def test_a_websocket_is_checked_the_same_and_closed_when_refused():
    closed = [{"type": "websocket.close", "code": 1008}]
    assert (
        call("/gradio_api/queue/data", ((b"host", b"evil.example"), WITH_TOKEN), kind="websocket")[0]
        == closed
    )
    assert call("/gradio_api/queue/data", (HOST,), kind="websocket")[0] == closed
    assert call("/nowhere", (HOST, WITH_TOKEN), kind="websocket")[0] == closed
    assert call("/gradio_api/queue/data", (HOST, WITH_TOKEN), kind="websocket")[0] == "app"
    # The printed address over a websocket: accepted, never answered with an HTTP redirect.
    assert call("/", (HOST,), kind="websocket", query=f"token={TOKEN}".encode())[0] == "app"


def test_the_file_route_serves_the_private_folder_only(folder, tmp_path):
    (folder / "a.md").write_text("x")
    (folder / "file=b").write_text("x")  # "file=" again inside the path: split once
    (tmp_path / "secret").write_text("x")
    route = "/gradio_api/file="
    assert call(route + f"{folder}/a.md", private_dir=folder)[0] == "app"
    assert call(route + f"{folder}/file=b", private_dir=folder)[0] == "app"
    assert call(route + f"{folder}/a.md", method="HEAD", private_dir=folder)[0] == "app"
    assert call(route + str(tmp_path / "secret"), private_dir=folder) == NOT_FOUND
    assert call(route + "http://evil.example/x", private_dir=folder) == NOT_FOUND
    assert call(route + f"{folder}/a.md") == NOT_FOUND  # no private folder
    assert call(route + f"{folder}/a.md", (HOST,), private_dir=folder) == NO_TOKEN  # token first


# --- The body's size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, reaches",
    [
        (b"0", True),
        (str(MIB8).encode(), True),
        (str(MIB8 + 1).encode(), False),
        (b"-1", False),
        (b"1e3", False),
    ],
)
def test_a_stated_length_above_the_cap_is_refused(length, reaches):
    headers = (HOST, WITH_TOKEN, (b"content-length", length))
    result = call("/gradio_api/queue/join", headers, method="POST", body=[])
    assert result[0] == "app" if reaches else result == TOO_LONG


def chunks(*sizes, last_more=False):
    return [
        {"type": "http.request", "body": b"x" * n, "more_body": i < len(sizes) - 1 or last_more}
        for i, n in enumerate(sizes)
    ]


def test_a_chunked_body_up_to_the_cap_reaches_the_app_whole_and_once():
    half = MIB8 // 2
    status, _, _, seen = call("/gradio_api/queue/join", method="POST", body=chunks(half, half), read=2)
    assert status == "app"
    first, then = seen["received"]
    assert first == {"type": "http.request", "body": b"x" * MIB8, "more_body": False}
    assert then == {"type": "http.disconnect"}  # afterwards: what the client's receive() says


def test_a_chunked_body_over_the_cap_is_refused_before_the_app():
    assert call("/gradio_api/queue/join", method="POST", body=chunks(MIB8 // 2, MIB8 // 2 + 1)) == TOO_LONG
    assert call("/gradio_api/queue/join", method="POST", body=chunks(MIB8 + 1, 0)) == TOO_LONG


def test_a_client_that_leaves_mid_body_is_refused():
    assert call("/gradio_api/queue/join", method="POST", body=chunks(10, last_more=True)) == TOO_LONG


def test_a_message_without_a_body_is_an_empty_one():
    status, _, _, seen = call(
        "/gradio_api/queue/join", method="POST", body=[{"type": "http.request"}], read=1
    )
    assert status == "app" and seen["received"] == [{"type": "http.request", "body": b"", "more_body": False}]


def test_a_websocket_has_no_body_to_read():
    status, _, _, seen = call(
        "/gradio_api/queue/data", kind="websocket", body=[{"type": "websocket.connect"}], read=1
    )
    assert status == "app" and seen["received"] == [{"type": "websocket.connect"}]


# --- The inventory of the app's routes ----------------------------------------------------------------


def test_app_routes_reads_mounts_included_routers_and_websockets():
    def route(path, methods=None):
        return SimpleNamespace(path=path, methods=methods)

    WebSocketRoute = type("WebSocketRoute", (), {})
    APIWebSocketRoute = type("APIWebSocketRoute", (), {})
    Mount = type("Mount", (), {})
    ws, api_ws, mount = WebSocketRoute(), APIWebSocketRoute(), Mount()
    ws.path, api_ws.path = "/ws", "/api_ws"
    mount.path, mount.routes = "/gradio_api", [route("/info", {"GET"}), route("/queue/join", {"POST", "GET"})]
    included = SimpleNamespace(original_router=SimpleNamespace(routes=[route("/inner", {"POST"})]))
    no_path = SimpleNamespace(methods={"OPTIONS"})
    app = SimpleNamespace(
        routes=[
            route("", {"GET"}), route("/a", {"HEAD", "GET"}), ws, api_ws, mount, included, route("/none"),
            no_path, route("/last", {"PUT"}),
        ]
    )  # fmt: skip
    assert guard.app_routes(app) == [
        ("GET", "/"),
        ("GET", "/a"),
        ("HEAD", "/a"),
        ("GET", "/ws"),
        ("GET", "/api_ws"),
        ("GET", "/gradio_api/info"),
        ("GET", "/gradio_api/queue/join"),
        ("POST", "/gradio_api/queue/join"),
        ("POST", "/inner"),
        ("OPTIONS", "/"),
        ("PUT", "/last"),
    ]


def test_the_cap_and_the_token_header_are_the_documented_ones():
    """What a client (gradio_client, the page's script) relies on: spelled out, not imported."""
    assert guard.MAX_BODY_BYTES == 8 * 1024 * 1024
    assert guard.TOKEN_HEADER == "x-research-token"
    assert guard.LOOPBACK_NAMES == {"localhost", "127.0.0.1", "::1", "[::1]"}

"""Exposure: only loopback listens, whatever the environment says; file routes stay inside the app."""

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from research.measure.page import open_page
from research.models.catalog import resolve

pytestmark = [pytest.mark.page, pytest.mark.model]
ROOT = Path(__file__).resolve().parents[1]


def get(url: str, timeout: float = 5, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
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
    status, body = get(page.url + route.format(p=secret), headers=page.headers)  # even with the token
    assert status in (400, 403, 404, 405), (status, body[:200])
    assert b"root:" not in body and b"models:" not in body and not body.startswith(b"GGUF")


@pytest.mark.parametrize(
    "route", ["gradio_api/runs", "gradio_api/run-history/records", "gradio_api/proxy=https://example.com/"]
)
def test_no_run_history_and_no_proxy(page, route):
    status, _ = get(page.url + route, headers=page.headers)
    assert status in (400, 403, 404)


# --- every route classified; the URL-fetching file route refused; the token -------------------


@pytest.fixture(scope="module")
def the_app():
    """The page's real ASGI app, built as `research demo` builds it (no model loaded)."""
    import runpy

    from research.page import server

    page = runpy.run_path(str(ROOT / "demo" / "app.py"), run_name="route_inventory")
    _, app = server.build_app(
        page["demo"].queue(), token="t", port=7860, theme=page["THEME"], css=page["CSS"]
    )
    return app


def test_every_route_the_app_serves_is_classified(the_app):
    """The inventory is read from the app itself (Gradio's routes included): a route a Gradio
    upgrade adds fails here until someone says in guard.ROUTES whether the page may serve it."""
    from research.page import guard

    served = set(guard.app_routes(the_app))
    unclassified = sorted(served - set(guard.ROUTES))
    assert unclassified == [], f"classify these routes in research.page.guard.ROUTES: {unclassified}"
    stale = sorted(set(guard.ROUTES) - served)
    assert stale == [], f"ROUTES lists routes the app no longer serves: {stale}"
    assert len(served) > 80  # Gradio's own, read through its mount and its included API router
    verdicts = {v for v, _ in guard.ROUTES.values()}
    assert verdicts == {"allowed", "guarded", "refused"}


def test_route_matching_refuses_what_no_route_names():
    from research.page.guard import route_of

    assert route_of("GET", "/gradio_api/file=/tmp/x") == ("GET", "/gradio_api/file={path_or_url:path}")
    assert route_of("GET", "/gradio_api/proxy=http://a/b") == ("GET", "/gradio_api/proxy={url_path:path}")
    assert route_of("POST", "/gradio_api/upload") == ("POST", "/gradio_api/upload")  # listed: refused
    assert route_of("GET", "/no/such/route") is None
    assert route_of("DELETE", "/") is None
    assert route_of("GET", "/assets/../../etc/passwd") == (
        "GET",
        "/assets/{path:path}",
    )  # Starlette's own check


#: The file route with a URL in it, in the spellings an attacker would try; each must be refused
#: before Gradio sees it (it looked the host up and fetched it).
URL_SPELLINGS = [
    "http://{h}/x",
    "https://{h}/x",
    "HTTP://{h}/x",
    "hTtP://{h}/x",
    "http%3A//{h}/x",
    "http%3a%2f%2f{h}/x",
    "%68ttp://{h}/x",
    "http%253A%252F%252F{h}/x",
    "//{h}/x",
    "%2F%2F{h}/x",
    "\\\\{h}/x",
    "%5C%5C{h}/x",
    "%20http://{h}/x",
    "%09http://{h}/x",
    "ftp://{h}/x",
    "file://{h}/etc/passwd",
    "data:text/plain,hello",
    "javascript:alert(1)",
    "http:{h}/x",
    "http:/{h}/x",
]


@pytest.mark.parametrize("spelling", URL_SPELLINGS)
def test_the_file_route_never_fetches_a_url(page, spelling):
    """A stand-in 'remote' server on loopback counts what reaches it: nothing does, in any
    spelling, with the page's token or without."""
    import http.server
    import threading

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"REMOTE-CONTENT")

        def log_message(self, *args):
            pass

    remote = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=remote.serve_forever, daemon=True).start()
    try:
        target = spelling.format(h=f"127.0.0.1:{remote.server_address[1]}")
        for route in ("gradio_api/file=", "gradio_api/file/", "gradio_api/proxy=", "GRADIO_API/FILE="):
            for headers in (page.headers, {}):
                status, body = get(page.url + route + target, headers=headers)
                assert status in (401, 404), (route, target, status)
                assert b"REMOTE-CONTENT" not in body
    finally:
        remote.shutdown()
    assert hits == []


def test_the_file_route_serves_only_the_pages_private_folder(tmp_path):
    from research.page.guard import file_allowed

    private = tmp_path / "private"
    private.mkdir()
    (private / "export.md").write_text("x")
    (tmp_path / "outside.md").write_text("y")
    (private / "link.md").symlink_to(tmp_path / "outside.md")
    assert file_allowed(str(private / "export.md"), private)
    # Gradio opens the path as the request decoded it, once: a name still holding "%2F" (sent as
    # "%252F") is another, relative, name; the check follows what will be opened.
    assert not file_allowed(str(private / "export.md").replace("/", "%2F"), private)
    assert not file_allowed(str(tmp_path / "outside.md"), private)
    assert not file_allowed(str(private / ".." / "outside.md"), private)
    assert not file_allowed(str(private / "link.md"), private)  # a link out of the folder
    assert not file_allowed(str(private / "missing.md"), private)
    assert not file_allowed(str(private / "export.md"), None)
    assert not file_allowed("export.md", private)  # relative: Gradio would read it from its cwd


def test_every_route_needs_the_token(page):
    """Loopback is open to every program of the device: the page answers only to its token."""
    for route in ("", "config", "gradio_api/info", "passage/harbour/1-0", "assets/index.js"):
        status, body = get(page.url + route)
        assert status == 401, route
        assert b"token" in body and b"<" not in body
        wrong = {"X-Research-Token": "not-" + page.token}
        assert get(page.url + route, headers=wrong)[0] == 401
    assert get(page.url + "config", headers=page.headers)[0] == 200
    req = urllib.request.Request(page.url + "gradio_api/queue/join", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401


def test_the_printed_address_sets_a_cookie_and_drops_the_token_from_the_address(page):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=5)
    conn.request("GET", f"/?token={page.token}")
    r = conn.getresponse()
    cookie = r.getheader("set-cookie")
    assert r.status == 303 and r.getheader("location") == "/"
    assert f"research_token_{page.port}={page.token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    r.read()
    conn.request("GET", "/config", headers={"Cookie": cookie.split(";")[0]})
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    # Another local web app's ordinary cookies (JSON, a space, an unclosed quote) beside the token's
    # do not hide it (Python's SimpleCookie gave up at the first, and the user was locked out).
    for junk in ('prefs={"theme":"dark"}', "a=b c", 'x="', "expires=x"):
        conn.request("GET", "/config", headers={"Cookie": f"{junk}; {cookie.split(';')[0]}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, junk
    conn.request("GET", "/config", headers={"Cookie": f"research_token_{page.port}=é{page.token}"})
    r = conn.getresponse()
    r.read()
    assert r.status == 401  # not ASCII: refused, not a server error
    conn.close()


def test_the_printed_address_names_this_start_of_the_page(page):
    """The address printed is under a name made for this start (`<random>.localhost`): browsers
    keep cookies by host, not port, and a 127.0.0.1 cookie would go to every other program's
    server on this device. The name is accepted as a Host; another one under .localhost is not."""
    host = urllib.parse.urlsplit(page.open_url).hostname
    assert host.endswith(".localhost") and len(host) == len("0123456789abcdef.localhost"), host
    assert get(page.url + "config", headers=page.headers | {"Host": f"{host}:{page.port}"})[0] == 200
    other = f"{'0' * 16}.localhost:{page.port}"
    assert get(page.url + "config", headers=page.headers | {"Host": other})[0] == 403
    assert f"http://127.0.0.1:{page.port}/?token=" in page.log.read_text()  # the fallback, said


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:8888"},  # JupyterLab, or any other local page
        {"Origin": "http://localhost:9999"},
        {"Origin": "https://127.0.0.1:{port}"},  # another scheme is another origin
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},  # an <img> on another port
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
    ],
)
def test_other_local_pages_are_other_origins(page, headers):
    """Even with the token (a page cannot know it, but a cookie rides along on same-site
    requests): the Origin's port counts, and the browser's own word on where a request comes
    from is believed."""
    sent = {k: v.format(port=page.port) for k, v in headers.items()} | page.headers
    for route in ("config", "gradio_api/info"):
        assert get(page.url + route, headers=sent)[0] == 403, (route, sent)


def test_a_navigation_from_elsewhere_to_the_page_is_not_refused(page):
    nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"} | page.headers
    assert get(page.url, headers=nav)[0] == 200


def test_a_request_body_is_capped(page):
    """Refused on its announced length, before any of it is read."""
    import http.client

    from research.page.guard import MAX_BODY_BYTES, TOKEN_HEADER

    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    conn.putrequest("POST", "/gradio_api/queue/join")
    conn.putheader(TOKEN_HEADER, page.token)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and str(MAX_BODY_BYTES) in r.read().decode()
    conn.close()
    # Chunked, with no length announced: refused at the cap, before the app sees any of it, and
    # the page's log holds no traceback of a half-answered request.
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
    conn.putrequest("POST", "/gradio_api/queue/join")
    conn.putheader(TOKEN_HEADER, page.token)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"a" * 2**20
    try:
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close the connection once it has refused
    r = conn.getresponse()
    assert r.status == 413 and str(MAX_BODY_BYTES) in r.read().decode()
    conn.close()
    assert get(page.url + "config", headers=page.headers)[0] == 200  # still serving
    assert "Traceback" not in page.log.read_text()


@pytest.mark.browser
def test_another_local_page_in_the_same_browser_gets_nothing(browser, page, tmp_path):
    """The attack the Origin check stops: the user has the page open (its cookie is set, and a
    cookie does not care for ports, so it lives under the page's own name) and visits another
    page served on this device (JupyterLab,
    a dev server), which sends the page requests that carry that cookie: an image that would
    make the server fetch a URL, a no-cors read, a simple POST to the API. Each reaches the page
    and is refused (the browser's own network log, read through playwright, says so), and the
    server fetches nothing."""
    import http.server
    import threading

    hits, cookies = [], []

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            cookies.append(self.headers.get("Cookie") or "")
            me = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = EVIL_PAGE.format(page=page.url.rstrip("/"), me=me)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    ctx = browser.new_context()
    statuses = {}
    try:
        tab = ctx.new_page()
        open_page(tab, page.open_url)  # the user's own tab: the cookie is set
        assert any(c["name"] == f"research_token_{page.port}" for c in ctx.cookies())
        other = ctx.new_page()

        # The raw responses, as the browser's network stack got them (DevTools protocol): the page's
        # Cross-Origin-Resource-Policy makes Chromium hide them from the page and from playwright.
        urls = {}
        cdp = ctx.new_cdp_session(other)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))

        codes = {}
        cdp.on("Network.responseReceivedExtraInfo", lambda e: codes.update({e["requestId"]: e["statusCode"]}))
        other.goto(f"http://127.0.0.1:{evil.server_address[1]}/", wait_until="load")
        other.wait_for_function("() => window.__done === true", timeout=20_000)
        for rid, url in urls.items():
            if url.startswith(page.url):
                statuses[url.split("?")[0]] = codes.get(rid)
    finally:
        ctx.close()
        evil.shutdown()
    assert [h for h in hits if h != "/favicon.ico"] == ["/"], hits  # the image's URL: never fetched
    assert len(statuses) == 3 and set(statuses.values()) == {403}, statuses
    # The page's cookie belongs to its own name (.localhost): the other server never sees it.
    assert not any(page.token in c for c in cookies), cookies


@pytest.mark.browser
def test_the_kits_own_browser_asks_no_one_but_this_device(browser, page, tmp_path):
    """The browser the kit launches (bench --page, bench --idle, the ARM rehearsal, these tests)
    with its quiet flags: over a page load and an answer, Chromium's own network log names no host
    but this device's, looked up or connected to (left to itself it asked Google for the time,
    updates and accounts, and sent a signature of the page's form to its autofill service). It
    still starts a request for updates and one for accounts that no flag stops: the resolver
    rules map those names to nothing, so no lookup and no connection is made, which is what is
    checked here."""
    import json

    from chromium import CHROMIUM, QUIET, on_device

    log = tmp_path / "netlog.json"
    # A second browser from the tests' own playwright (one playwright may run in a process).
    b = browser.browser_type.launch(executable_path=CHROMIUM, args=[*QUIET, f"--log-net-log={log}"])
    try:
        tab = b.new_page(viewport={"width": 390, "height": 844})
        open_page(tab, page.open_url)
        box = tab.get_by_placeholder("Ask a question…")
        box.fill("What is the capital of France?")
        box.press("Enter")
        tab.wait_for_function("() => document.body.innerText.includes('◷')", timeout=120_000)
        tab.wait_for_timeout(5000)  # what the browser does on its own after a page settles
    finally:
        b.close()
    netlog = json.loads(log.read_text())
    kinds = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
    named = set()
    for e in netlog["events"]:
        kind, params = kinds.get(e["type"], ""), e.get("params") or {}
        if kind.startswith("HOST_RESOLVER") and params.get("host"):
            host = params["host"].split("://")[-1]
            named.add(urllib.parse.urlsplit("//" + host).hostname or host)
        elif kind == "TCP_CONNECT_ATTEMPT" and params.get("address"):
            named.add(params["address"].rsplit(":", 1)[0].strip("[]"))
    assert named, "the network log should name the page's own host"
    assert sorted(h for h in named if not (on_device(h) or h in ("::1", "~notfound"))) == [], named


EVIL_PAGE = """<!doctype html><html><body>
<img src="{page}/gradio_api/file={me}/fetched-by-the-server">
<script>
Promise.all([
  fetch("{page}/config", {{mode: "no-cors", credentials: "include"}}).catch(() => null),
  fetch("{page}/gradio_api/call/ask", {{method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"Content-Type": "text/plain"}}, body: '{{"data": ["What is 2+2?"]}}'}}).catch(() => null),
]).then(() => setTimeout(() => {{ window.__done = true; }}, 1500));
</script></body></html>"""


def test_listening_anywhere_answers_only_to_this_device_and_its_token(tmp_path):
    """--listen-anywhere: a name that is not one of this device's addresses (DNS rebinding) is
    refused; the device's own address works with the token only; the passages too."""
    from page_server import PageServer

    from research.page.guard import local_addresses

    lan = sorted(a for a in local_addresses() if ":" not in a and not a.startswith("127."))
    server = PageServer(tmp_path, "--host", "0.0.0.0", "--listen-anywhere")
    try:
        assert "can be reached from the network" in server.log.read_text()
        for host in ("attacker.example", f"attacker.example:{server.port}", "192.0.2.7"):
            assert server.get("config", headers={"Host": host})[0] == 403, host
        if lan:
            ok = {"Host": f"{lan[0]}:{server.port}"}
            assert server.get("config", headers=ok)[0] == 200
            assert server.get("config", headers=ok, token=False)[0] == 401
            assert server.get("passage/x/1-0", headers=ok, token=False)[0] == 401
    finally:
        server.stop()

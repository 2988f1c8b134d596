"""research.models.download and research.hashing against real HTTP servers on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

import research.hashing as hs
import research.models.download as dl
from research.errors import KitError
from research.hashing import cached_sha256
from research.models.download import download, hub_url, sha256_file

BODY = b"GGUF" + random.Random(0).randbytes(300_000 - 4)  # several chunks at CHUNK
SHA = hashlib.sha256(BODY).hexdigest()
CHUNK = 64 * 1024


@dataclass
class Server:
    """What the handler serves, its switches, and every request it saw."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    html: set[str] = field(default_factory=set)  # paths that answer 200 with an HTML page
    status: dict[str, int] = field(default_factory=dict)  # paths that answer an error code
    redirects: dict[str, str] = field(default_factory=dict)  # path -> 302 Location
    content_type: str = "application/octet-stream"
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a Range
    cut_after: int | None = None  # next file response: send K bytes, then close (one shot)
    delay: float = 0.0  # seconds to wait before answering
    token: str | None = None  # when set, every request needs "Authorization: Bearer <token>"
    requests: list[dict] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st: Server = self.server.state
        rec = {"path": self.path, "range": self.headers.get("Range"), "status": 0, "sent": 0}
        rec["user_agent"] = self.headers.get("User-Agent")
        rec["auth"] = self.headers.get_all("Authorization")  # None when absent
        st.requests.append(rec)
        time.sleep(st.delay)
        if st.token is not None and rec["auth"] != [f"Bearer {st.token}"]:
            return self._answer(rec, 401, b"Invalid credentials", {})
        if self.path in st.redirects:
            return self._answer(rec, 302, b"", {"Location": st.redirects[self.path]})
        if self.path in st.status:
            return self._answer(rec, st.status[self.path], b"no", {})
        if self.path in st.html:
            page = b"<html><body>Sign in to continue</body></html>"
            return self._answer(rec, 200, page, {"Content-Type": "text/html; charset=utf-8"})
        body = st.files.get(self.path)
        if body is None:
            return self._answer(rec, 404, b"not found", {})
        start, code, headers = 0, 200, {"Content-Type": st.content_type}
        match = re.fullmatch(r"bytes=(\d+)-", rec["range"] or "")
        if match and not st.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                return self._answer(rec, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
            code = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        payload = body[start:]
        headers["Content-Length"] = str(len(payload))
        if st.cut_after is not None:
            payload, st.cut_after = payload[: st.cut_after], None
            self.close_connection = True
        self._answer(rec, code, payload, headers, length_set=True)

    def _answer(self, rec, code, payload, headers, length_set=False):
        rec["status"] = code
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        if not length_set:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        rec["sent"] = len(payload)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the client hanging up early is expected
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """A proxy from the environment must not see (or swallow) loopback test traffic."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(autouse=True)
def no_hf_login(monkeypatch, tmp_path):
    """No Hugging Face token from the environment or the real ~/.cache/huggingface/token."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # holds no token file


def serve(host: str):
    """A Server on 127.0.0.1, named in its URLs as ``host`` (a second name for the same machine)."""
    state = Server(files={"/m.gguf": BODY})
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.state = state
    state.base = f"http://{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def server():
    yield from serve("127.0.0.1")


@pytest.fixture
def cdn():
    """Another host name and port, standing for the CDN the hub redirects file downloads to."""
    yield from serve("localhost")


def fetch(url, dest, **kwargs):
    return download(url, dest, progress=False, chunk_size=CHUNK, **kwargs)


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.rglob("*") if p.is_file())


def test_full_download_checks_size_and_sha(server, tmp_path):
    dest = tmp_path / "models" / "m.gguf"  # the folder does not exist yet
    assert fetch(server.url("/m.gguf"), dest, size=len(BODY), sha256=SHA.upper()) == dest
    assert dest.read_bytes() == BODY
    assert leftovers(tmp_path) == ["m.gguf"]
    [req] = server.requests
    assert req["range"] is None and req["sent"] == len(BODY)
    assert req["user_agent"].startswith("research-kit/")


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest, cut = tmp_path / "m.gguf", 100_003
    server.cut_after = cut
    with pytest.raises(KitError, match="run the same command again to resume"):
        fetch(server.url("/m.gguf"), dest, size=len(BODY), sha256=SHA)
    part = tmp_path / "m.gguf.part"
    assert part.read_bytes() == BODY[:cut] and not dest.exists()

    fetch(server.url("/m.gguf"), dest, size=len(BODY), sha256=SHA)
    assert dest.read_bytes() == BODY and not part.exists()
    first, second = server.requests
    assert first["range"] is None and first["sent"] == cut
    assert second["range"] == f"bytes={cut}-"
    assert second["status"] == 206 and second["sent"] == len(BODY) - cut


def test_server_without_range_support_starts_over(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "m.gguf"
    # A stale part that would corrupt the file if the 200 body were appended to it.
    (tmp_path / "m.gguf.part").write_bytes(b"GGUF" + b"x" * 5000)
    fetch(server.url("/m.gguf"), dest, size=len(BODY), sha256=SHA)
    assert dest.read_bytes() == BODY
    [req] = server.requests
    assert req["range"] == "bytes=5004-" and req["status"] == 200


def test_sha_mismatch_removes_part(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(KitError, match=f"sha256 check failed.*expected {wrong}, got {SHA}.*removed"):
        fetch(server.url("/m.gguf"), tmp_path / "m.gguf", sha256=wrong)
    assert leftovers(tmp_path) == []


def test_sha_mismatch_after_resume_hashes_the_old_part_too(server, tmp_path):
    # The old part differs from BODY in one byte; only re-hashing it can catch that.
    (tmp_path / "m.gguf.part").write_bytes(BODY[:1000] + b"!" + BODY[1001:50_000])
    with pytest.raises(KitError, match="sha256 check failed"):
        fetch(server.url("/m.gguf"), tmp_path / "m.gguf", sha256=SHA)
    assert server.requests[0]["range"] == "bytes=50000-"
    assert leftovers(tmp_path) == []


def test_size_mismatch_refused_before_transfer(server, tmp_path):
    with pytest.raises(KitError, match=f"expected {len(BODY) + 1} bytes, the server has {len(BODY)}"):
        fetch(server.url("/m.gguf"), tmp_path / "m.gguf", size=len(BODY) + 1)
    assert leftovers(tmp_path) == []


def test_html_page_refused(server, tmp_path):
    server.html.add("/login.gguf")
    with pytest.raises(KitError, match="HTML page"):
        fetch(server.url("/login.gguf"), tmp_path / "m.gguf")
    assert leftovers(tmp_path) == []


def test_body_without_gguf_magic_refused_for_gguf_only(server, tmp_path):
    server.files["/junk"] = b"<!doctype" + bytes(1000)
    with pytest.raises(KitError, match="did not return a GGUF file"):
        fetch(server.url("/junk"), tmp_path / "m.gguf")
    assert leftovers(tmp_path) == []
    assert fetch(server.url("/junk"), tmp_path / "m.bin").read_bytes() == server.files["/junk"]


def test_not_found(server, tmp_path):
    with pytest.raises(KitError, match="HTTP 404.*check the repository id"):
        fetch(server.url("/missing.gguf"), tmp_path / "m.gguf")
    assert leftovers(tmp_path) == []


def test_connection_refused_keeps_part(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    part = tmp_path / "m.gguf.part"
    part.write_bytes(BODY[:1234])
    with pytest.raises(KitError, match="refused the connection.*run the same command again"):
        fetch(f"http://127.0.0.1:{port}/m.gguf", tmp_path / "m.gguf")
    assert part.read_bytes() == BODY[:1234]


def test_dns_failure_is_a_kit_error(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):  # stands in for a failed lookup; no packet leaves the machine
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(KitError, match="could not look up hub.invalid.*try again$"):
        fetch("http://hub.invalid/m.gguf", tmp_path / "m.gguf")
    assert leftovers(tmp_path) == []


def test_timeout_is_a_kit_error(server, tmp_path):
    server.delay = 1.0
    with pytest.raises(KitError, match="no answer from 127.0.0.1 within 0.2 s"):
        fetch(server.url("/m.gguf"), tmp_path / "m.gguf", timeout=0.2)


def test_redirect_is_followed_and_keeps_range(server, tmp_path):
    server.redirects["/repo/resolve/main/m.gguf"] = "/cdn/blob"
    server.files["/cdn/blob"] = BODY
    (tmp_path / "m.gguf.part").write_bytes(BODY[:7000])
    fetch(server.url("/repo/resolve/main/m.gguf"), tmp_path / "m.gguf", sha256=SHA)
    assert (tmp_path / "m.gguf").read_bytes() == BODY
    assert [(r["path"], r["status"], r["range"]) for r in server.requests] == [
        ("/repo/resolve/main/m.gguf", 302, "bytes=7000-"),
        ("/cdn/blob", 206, "bytes=7000-"),
    ]


def test_existing_dest_needs_no_request(server, tmp_path):
    dest = tmp_path / "m.gguf"
    dest.write_bytes(BODY)
    assert fetch(server.url("/m.gguf"), dest, size=len(BODY), sha256=SHA) == dest
    assert server.requests == []


def test_existing_dest_with_wrong_hash_is_replaced(server, tmp_path):
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"GGUF" + bytes(len(BODY) - 4))
    fetch(server.url("/m.gguf"), dest, size=len(BODY), sha256=SHA)
    assert dest.read_bytes() == BODY and len(server.requests) == 1


def test_complete_part_gets_416_then_verified(server, tmp_path):
    (tmp_path / "m.gguf.part").write_bytes(BODY)
    fetch(server.url("/m.gguf"), tmp_path / "m.gguf", sha256=SHA)
    assert (tmp_path / "m.gguf").read_bytes() == BODY
    assert [r["status"] for r in server.requests] == [416]


def test_not_enough_disk_space(server, tmp_path, monkeypatch):
    usage = SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(KitError, match=r"not enough disk space.*need 0\.3 MB, 0\.0 MB free"):
        fetch(server.url("/m.gguf"), tmp_path / "m.gguf", size=len(BODY))
    assert leftovers(tmp_path) == []


def test_ctrl_c_keeps_part_and_reraises(server, tmp_path, monkeypatch):
    written = []

    class InterruptingBar(dl.tqdm):  # Ctrl-C arrives right after the second chunk
        def update(self, n=1):
            written.append(n)
            if len(written) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(dl, "tqdm", InterruptingBar)
    with pytest.raises(KeyboardInterrupt):
        fetch(server.url("/m.gguf"), tmp_path / "m.gguf")
    assert (tmp_path / "m.gguf.part").read_bytes() == BODY[: 2 * CHUNK]
    assert not (tmp_path / "m.gguf").exists()


def test_progress_bar_on_stderr_only_when_asked(server, tmp_path, capsys):
    download(server.url("/m.gguf"), tmp_path / "a.gguf", progress=True, chunk_size=CHUNK)
    assert "a.gguf" in capsys.readouterr().err
    download(server.url("/m.gguf"), tmp_path / "b.gguf", progress=False, chunk_size=CHUNK)
    assert capsys.readouterr().err == ""


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(BODY)
    assert sha256_file(path, chunk_size=1000) == SHA


def test_hub_url_default_and_env(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_url("org/m-GGUF", "m.gguf") == "https://huggingface.co/org/m-GGUF/resolve/main/m.gguf"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert hub_url("org/m", "m.gguf") == "https://hf-mirror.example/org/m/resolve/main/m.gguf"
    assert hub_url("org/m", "m.gguf", endpoint="http://127.0.0.1:9") == (
        "http://127.0.0.1:9/org/m/resolve/main/m.gguf"
    )


def test_hub_url_quotes_path_parts(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    url = hub_url("org/m", "sub dir/m Q4_K#1?.gguf", revision="refs/pr/1")
    assert url == "https://huggingface.co/org/m/resolve/refs%2Fpr%2F1/sub%20dir/m%20Q4_K%231%3F.gguf"


# The Hugging Face token --------------------------------------------------------------------

TOKEN = "hf_TestSecret0123456789abcdefXYZ"
HUB_FILE = "/org/m/resolve/main/m.gguf"
BEARER = [f"Bearer {TOKEN}"]


@pytest.fixture
def hub(server, cdn, monkeypatch):
    """The first server as the hub endpoint: it needs the token and sends files to the CDN."""
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    server.token = TOKEN
    server.redirects["/org/old-name/resolve/main/m.gguf"] = HUB_FILE  # renamed repo: stays on hub
    server.redirects[HUB_FILE] = cdn.url("/blob/m")
    cdn.files["/blob/m"] = BODY
    return server


def seen(state):
    return [(r["path"], r["status"], r["auth"], r["range"]) for r in state.requests]


def configure_token(how, monkeypatch, tmp_path):
    """Give the kit TOKEN the way a user would; returns what error messages may call its source."""
    home_file = tmp_path / "hf-home" / "token"  # HF_HOME is tmp_path / "hf-home" (no_hf_login)
    home_file.parent.mkdir(exist_ok=True)
    if how in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        home_file.write_text("hf_StoredTokenThatMustLose")  # the variable comes first
        monkeypatch.setenv(how, f" {TOKEN}\n")
        return how
    if how == "HF_HOME-file":  # what `hf auth login` writes
        home_file.write_text(TOKEN + "\n")
        return str(home_file)
    assert how == "HF_TOKEN_PATH-file"
    home_file.write_text("hf_StoredTokenThatMustLose")  # HF_TOKEN_PATH overrides HF_HOME
    path = tmp_path / "elsewhere" / "tok"
    path.parent.mkdir()
    path.write_text(TOKEN)
    monkeypatch.setenv("HF_TOKEN_PATH", str(path))
    return str(path)


TOKEN_SOURCES = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME-file", "HF_TOKEN_PATH-file"]


@pytest.mark.parametrize("how", TOKEN_SOURCES)
def test_token_goes_to_the_hub_and_never_to_the_cdn(hub, cdn, tmp_path, monkeypatch, how):
    configure_token(how, monkeypatch, tmp_path)
    dest = tmp_path / "models" / "m.gguf"
    fetch(hub_url("org/old-name", "m.gguf"), dest, size=len(BODY), sha256=SHA)
    assert dest.read_bytes() == BODY
    assert seen(hub) == [
        ("/org/old-name/resolve/main/m.gguf", 302, BEARER, None),
        (HUB_FILE, 302, BEARER, None),  # a redirect within the hub keeps the token
    ]
    assert seen(cdn) == [("/blob/m", 200, None, None)]


def test_resume_sends_token_to_the_hub_only(hub, cdn, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (tmp_path / "m.gguf.part").write_bytes(BODY[:7000])
    fetch(hub_url("org/m", "m.gguf"), tmp_path / "m.gguf", size=len(BODY), sha256=SHA)
    assert (tmp_path / "m.gguf").read_bytes() == BODY
    assert seen(hub) == [(HUB_FILE, 302, BEARER, "bytes=7000-")]
    assert seen(cdn) == [("/blob/m", 206, None, "bytes=7000-")]


@pytest.mark.parametrize("how", ["none-configured", "HF_HUB_DISABLE_IMPLICIT_TOKEN"])
def test_no_token_sent_when_none_is_configured_or_allowed(hub, cdn, tmp_path, monkeypatch, how):
    hub.token = None  # an open model
    if how == "HF_HUB_DISABLE_IMPLICIT_TOKEN":
        configure_token("HF_TOKEN", monkeypatch, tmp_path)
        monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    fetch(hub_url("org/m", "m.gguf"), tmp_path / "m.gguf", sha256=SHA)
    assert seen(hub) == [(HUB_FILE, 302, None, None)]
    assert seen(cdn) == [("/blob/m", 200, None, None)]


@pytest.mark.parametrize(
    "endpoint",
    [
        lambda server, cdn: None,  # huggingface.co
        lambda server, cdn: cdn.base,  # another host name and port
        lambda server, cdn: cdn.base.replace("localhost", "127.0.0.1"),  # same host, other port
        lambda server, cdn: server.base.replace("http:", "https:"),  # same host and port, https
    ],
    ids=["default-hub", "other-host", "other-port", "other-scheme"],
)
def test_token_never_sent_off_the_endpoint(server, cdn, tmp_path, monkeypatch, endpoint):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    if base := endpoint(server, cdn):
        monkeypatch.setenv("HF_ENDPOINT", base)
    fetch(server.url("/m.gguf"), tmp_path / "m.gguf", sha256=SHA)
    assert seen(server) == [("/m.gguf", 200, None, None)]


def all_text(exc: BaseException) -> str:
    """The message, the repr and the whole exception chain, as a traceback would show them."""
    parts = []
    while exc is not None:
        parts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("code", [401, 403])
def test_gated_model_without_token_says_how_to_get_access(hub, cdn, tmp_path, code):
    if code == 403:
        hub.token, hub.status[HUB_FILE] = None, 403
        del hub.redirects[HUB_FILE]  # the hub answers 403 itself
    with pytest.raises(KitError) as info:
        fetch(hub_url("org/m", "m.gguf"), tmp_path / "m.gguf")
    msg = str(info.value)
    assert f"HTTP {code}" in msg and "no Hugging Face token was sent" in msg
    assert "set HF_TOKEN" in msg and "`hf auth login`" in msg and "`huggingface-cli login`" in msg
    assert f"accept the model's licence on {hub.base}/org/m" in msg
    assert "refused" not in msg
    assert [r["auth"] for r in hub.requests] == [None] and cdn.requests == []


@pytest.mark.parametrize("how", TOKEN_SOURCES)
@pytest.mark.parametrize("code", [401, 403])
def test_refused_token_is_named_but_never_shown(hub, tmp_path, monkeypatch, capsys, how, code):
    source = configure_token(how, monkeypatch, tmp_path)
    if code == 401:
        hub.token = "hf_TheOneTheServerWants"  # TOKEN is wrong or expired
    else:
        hub.status[HUB_FILE] = 403  # a good token, but the licence is not accepted yet
        del hub.redirects[HUB_FILE]
    with pytest.raises(KitError) as info:
        download(hub_url("org/m", "m.gguf"), tmp_path / "m.gguf", progress=True)
    msg = str(info.value)
    assert f"HTTP {code}" in msg and f"the Hugging Face token from {source} was refused" in msg
    assert f"accept the model's licence on {hub.base}/org/m" in msg
    assert hub.requests[0]["auth"] == BEARER  # it was sent, and still appears nowhere below
    out, err = capsys.readouterr()
    assert TOKEN not in all_text(info.value) + out + err


def test_token_unfit_for_a_header_is_refused_without_showing_it(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "Bearer hf_Secr\u00e9t")  # pasted with its prefix, non-ASCII
    with pytest.raises(KitError, match="token from HF_TOKEN has characters") as info:
        fetch(hub_url("org/m", "m.gguf"), tmp_path / "m.gguf")
    assert "Secr" not in all_text(info.value) and hub.requests == []


def test_unreadable_token_file_is_a_kit_error(hub, tmp_path, monkeypatch):
    (tmp_path / "hf-home" / "token").mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(KitError, match="cannot read the Hugging Face token file .*hf-home/token"):
        fetch(hub_url("org/m", "m.gguf"), tmp_path / "m.gguf")


def test_token_file_found_like_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.hf_token_path() == tmp_path / "xdg" / "huggingface" / "token"
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert dl.hf_token_path() == Path(os.path.expanduser("~/hf/token"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "t"))
    assert dl.hf_token_path() == tmp_path / "t"
    assert dl.hub_token() is None  # no file there, and nothing else asked the network


def test_token_repr_hides_the_value():
    assert TOKEN not in repr(dl.HubToken(TOKEN, "HF_TOKEN"))


# File hashes, cached -----------------------------------------------------------------------


@pytest.fixture
def hash_calls(tmp_path, monkeypatch):
    """Point the cache into tmp_path and count the times a file is really read and hashed."""
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def counting(path, *args, **kwargs):
        calls.append(path)
        return sha256_file(path, *args, **kwargs)

    monkeypatch.setattr(hs, "sha256_file", counting)
    return calls


def aged(path, seconds_ago=60, data=None):
    """Write ``data`` (if given) and date the file in the past, beyond the racy-write window."""
    if data is not None:
        path.write_bytes(data)
    when = time.time_ns() - seconds_ago * 1_000_000_000
    os.utime(path, ns=(when, when))
    return path


def test_cached_sha256_hashes_once(tmp_path, hash_calls, monkeypatch):
    path = aged(tmp_path / "m.gguf", data=BODY)
    assert cached_sha256(path) == SHA
    assert cached_sha256(path) == SHA
    monkeypatch.chdir(tmp_path)
    assert cached_sha256("m.gguf") == SHA  # keyed by the resolved path
    assert len(hash_calls) == 1
    cache = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert cache["entries"][str(path.resolve())]["sha256"] == SHA


def test_cached_sha256_sees_a_changed_file(tmp_path, hash_calls):
    path = aged(tmp_path / "m.gguf", data=BODY)
    assert cached_sha256(path) == SHA
    other = bytes(len(BODY))  # same size, so only the mtime tells them apart
    aged(path, seconds_ago=30, data=other)
    assert cached_sha256(path) == hashlib.sha256(other).hexdigest()
    mtime = path.stat().st_mtime_ns
    path.write_bytes(other + b"!")
    os.utime(path, ns=(mtime, mtime))  # same mtime, other size
    assert cached_sha256(path) == hashlib.sha256(other + b"!").hexdigest()
    assert len(hash_calls) == 3


def test_cached_sha256_does_not_keep_a_file_written_just_now(tmp_path, hash_calls):
    path = tmp_path / "m.gguf"
    path.write_bytes(BODY)  # could change again within the same mtime tick
    assert cached_sha256(path) == cached_sha256(path) == SHA
    assert len(hash_calls) == 2
    assert not (tmp_path / "cache" / "sha256.json").exists()


@pytest.mark.parametrize(
    "damage",
    [
        b'{"version": 1, "entries": {"',  # cut off mid-write
        b"\xff\xfe garbage",
        b"[]",
        b'{"version": 1, "entries": []}',
        "bad entry",
    ],
)
def test_cached_sha256_ignores_a_damaged_cache(tmp_path, hash_calls, damage):
    path = aged(tmp_path / "m.gguf", data=BODY)
    cache = tmp_path / "cache" / "sha256.json"
    cache.parent.mkdir()
    if damage == "bad entry":  # right size and mtime, but not a hash: must not be believed
        st = path.stat()
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": "not a hash"}
        damage = json.dumps({"version": 1, "entries": {str(path.resolve()): entry}}).encode()
    cache.write_bytes(damage)
    assert cached_sha256(path) == SHA
    assert cached_sha256(path) == SHA  # and the rewritten cache now serves it
    assert len(hash_calls) == 1
    assert json.loads(cache.read_text())["version"] == 1


def test_cached_sha256_keeps_the_newest_entries(tmp_path, hash_calls, monkeypatch):
    monkeypatch.setattr(hs, "MAX_ENTRIES", 3)
    paths = [aged(tmp_path / f"f{i}", data=bytes([i])) for i in range(5)]
    for path in paths:
        cached_sha256(path)
    entries = json.loads((tmp_path / "cache" / "sha256.json").read_text())["entries"]
    assert list(entries) == [str(p.resolve()) for p in paths[2:]]
    cached_sha256(paths[4])
    cached_sha256(paths[0])  # evicted: hashed again
    assert hash_calls == [p.resolve() for p in paths + [paths[0]]]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["sha256.json"]  # no temp files


def test_cached_sha256_overlapping_writers_leave_a_whole_file(tmp_path, hash_calls, monkeypatch):
    a, b = aged(tmp_path / "a", data=b"a"), aged(tmp_path / "b", data=b"b")
    real_dump = json.dump

    def dump_with_another_writer_midway(obj, f, **kwargs):
        text = json.dumps(obj, **kwargs)
        f.write(text[: len(text) // 2])
        f.flush()
        monkeypatch.setattr(json, "dump", real_dump)
        assert cached_sha256(b) == hashlib.sha256(b"b").hexdigest()  # stores its entry whole
        f.write(text[len(text) // 2 :])

    monkeypatch.setattr(json, "dump", dump_with_another_writer_midway)
    assert cached_sha256(a) == hashlib.sha256(b"a").hexdigest()
    # One writer's whole file, never a mix of the two (the other entry may be lost: a cache).
    entries = json.loads((tmp_path / "cache" / "sha256.json").read_text())["entries"]
    assert list(entries) in ([str(a.resolve())], [str(b.resolve())])
    for key, entry in entries.items():
        assert entry["sha256"] == hashlib.sha256(Path(key).read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["sha256.json"]


def test_cached_sha256_interrupted_write_keeps_the_old_cache(tmp_path, hash_calls, monkeypatch):
    a, b = aged(tmp_path / "a", data=b"a"), aged(tmp_path / "b", data=b"b")
    cached_sha256(a)
    cache = tmp_path / "cache" / "sha256.json"
    before = cache.read_bytes()

    def dies_midway(obj, f, **kwargs):
        f.write(json.dumps(obj)[:20])
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cached_sha256(b)
    assert cache.read_bytes() == before
    assert sorted(p.name for p in cache.parent.iterdir()) == ["sha256.json"]
    cached_sha256(a)
    assert hash_calls == [a.resolve(), b.resolve()]  # a still served from the cache


def test_cached_sha256_survives_an_unwritable_cache(tmp_path, hash_calls, monkeypatch):
    (tmp_path / "cache").write_text("a file where the folder should be")
    path = aged(tmp_path / "m.gguf", data=BODY)
    assert cached_sha256(path) == cached_sha256(path) == SHA
    assert len(hash_calls) == 2

"""research.download against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

import research.download as dl
from research.download import download, hub_url, sha256_file
from research.errors import KitError

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
        st.requests.append(rec)
        time.sleep(st.delay)
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


@pytest.fixture
def server():
    state = Server(files={"/m.gguf": BODY})
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.state = state
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


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


@pytest.mark.parametrize("code", [401, 403])
def test_gated_model_mentions_login(server, tmp_path, code):
    server.status["/gated.gguf"] = code
    with pytest.raises(KitError, match=f"HTTP {code}.*Hugging Face login/licence acceptance"):
        fetch(server.url("/gated.gguf"), tmp_path / "m.gguf")


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

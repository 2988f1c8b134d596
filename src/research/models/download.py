"""Fetch a model file only when asked: resumable, checked, and moved into place atomically.

The file is written to ``dest + ".part"`` and becomes ``dest`` only after its size, hash and
GGUF magic have been checked, so a half-written or wrong file never sits under the real name.
A network failure or Ctrl-C keeps the part file; the next run resumes it with an HTTP Range.

Gated models need the user's Hugging Face token. It is read as huggingface_hub reads it, without
touching the network, and sent only to the hub itself, never to the CDN hosts the hub redirects
file downloads to, nor to any other host; it is never printed.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import research
from research.errors import KitError
from research.hashing import sha256_file
from research.units import MB

DEFAULT_ENDPOINT = "https://huggingface.co"
RESUME = "run the same command again to resume"
RESUME_HINT = f"the partial download was kept: {RESUME}"
TOKEN_HELP = (
    "set HF_TOKEN to a Hugging Face access token or run `hf auth login` (older: `huggingface-cli login`)"
)


def hub_endpoint() -> str:
    """The hub's base URL: $HF_ENDPOINT (mirrors), else https://huggingface.co; no trailing "/"."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_url(repo: str, filename: str, revision: str = "main", endpoint: str | None = None) -> str:
    """URL of one file in a Hugging Face repository.

    The endpoint is the argument, else $HF_ENDPOINT (mirrors), else huggingface.co.
    Example: ("a/b", "m Q4.gguf") -> "https://huggingface.co/a/b/resolve/main/m%20Q4.gguf"
    """
    base = (endpoint or hub_endpoint()).rstrip("/")
    quote = urllib.parse.quote
    # Filenames may sit in sub-folders, so "/" stays; a revision like "refs/pr/1" is one part.
    return f"{base}/{quote(repo)}/resolve/{quote(revision, safe='')}/{quote(filename)}"


@dataclass(frozen=True)
class HubToken:
    """A Hugging Face access token and where it came from; its repr leaves the value out."""

    value: str = field(repr=False)
    source: str  # "HF_TOKEN", or the token file's path: safe to show in messages


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_token_path() -> Path:
    """huggingface_hub's token file, found as it finds it, but at call time.

    $HF_TOKEN_PATH, else $HF_HOME/token, else $XDG_CACHE_HOME/huggingface/token, else
    ~/.cache/huggingface/token (`hf auth login` writes it).
    """

    def expand(path: str) -> str:
        return os.path.expandvars(os.path.expanduser(path))

    if os.environ.get("HF_TOKEN_PATH"):
        return Path(expand(os.environ["HF_TOKEN_PATH"]))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(expand(os.environ.get("HF_HOME") or os.path.join(cache, "huggingface"))) / "token"


def hub_token() -> HubToken | None:
    """The user's Hugging Face token: $HF_TOKEN (or the older $HUGGING_FACE_HUB_TOKEN), else
    the token file `hf auth login` wrote; None when there is none.

    The sources huggingface_hub.get_token() reads, in its order, minus the ones that reach
    the network (its CI token exchange, $HF_OIDC_RESOURCE, and its refresh of expiring
    browser-login tokens) and the Colab vault. Not get_token() itself, for those, and because
    it fixes the file's path when huggingface_hub is first imported.
    """
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if value := _clean_token(os.environ.get(name)):
            return _checked(HubToken(value, name))
    path = hf_token_path()
    try:
        value = _clean_token(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        msg = f"cannot read the Hugging Face token file {path} ({why}); fix or delete it, or {TOKEN_HELP}"
        raise KitError(msg) from None
    return _checked(HubToken(value, str(path))) if value else None


def _clean_token(text: str | None) -> str | None:
    """As huggingface_hub cleans it: line breaks dropped, blanks stripped, "" -> None."""
    return (text or "").replace("\r", "").replace("\n", "").strip() or None


def _checked(token: HubToken) -> HubToken:
    # http.client would refuse such a value with an error that quotes it.
    if not re.fullmatch(r"[!-~]+", token.value):
        raise KitError(
            f"the Hugging Face token from {token.source} has characters an HTTP header cannot "
            "carry; copy the token again from the hub's settings page"
        )
    return token


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a malformed port is no one's origin
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        return None
    return scheme, parts.hostname, port or {"http": 80, "https": 443}.get(scheme)


def on_hub(url: str) -> bool:
    """True when ``url`` is on the hub's own origin (scheme, host and port of hub_endpoint()).

    Example: "https://huggingface.co/a/b/resolve/main/m.gguf" -> True; "https://cdn-lfs.hf.co/x" -> False
    """
    origin = _origin(url)
    return origin is not None and origin == _origin(hub_endpoint())


def _token_for(url: str) -> HubToken | None:
    """The token to send with a request for ``url``: only to the hub, and not when the user
    turned implicit tokens off as huggingface_hub allows ($HF_HUB_DISABLE_IMPLICIT_TOKEN)."""
    if not on_hub(url) or _env_true("HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        return None
    return hub_token()


class _HubRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, with the token following only redirects that stay on the hub.

    The token travels as an unredirected header, which urllib does not copy onto the next
    request, so the CDN hosts the hub sends file downloads to never see it. A redirect within
    the hub (a renamed repository) gets it again. Range and the other headers follow as usual.
    """

    def __init__(self, token: HubToken | None):
        self.token = token

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.token is not None and on_hub(new.full_url):
            new.add_unredirected_header("Authorization", f"Bearer {self.token.value}")
        return new


def _mb(n: int) -> str:
    return f"{n / MB:,.1f} MB"


def _network_error(url: str, exc: BaseException, part: Path, timeout: float) -> KitError:
    """One line for a failure to reach or read from the server."""
    reason = getattr(exc, "reason", exc)
    host = urllib.parse.urlsplit(url).hostname
    if isinstance(reason, TimeoutError):
        what = f"no answer from {host} within {timeout:g} s"
    elif isinstance(reason, socket.gaierror):
        what = f"could not look up {host} (no internet connection or DNS failure)"
    elif isinstance(reason, ConnectionRefusedError):
        what = f"{host} refused the connection"
    else:
        what = f"network error talking to {host}: {reason}"
    has_part = part.exists() and part.stat().st_size > 0
    return KitError(f"download failed: {what}; " + (RESUME_HINT if has_part else "try again"))


def _http_error(url: str, exc: urllib.error.HTTPError, token: HubToken | None) -> KitError:
    """One line for an HTTP error; for 401/403, how to get access (never the token itself)."""
    if exc.code in (401, 403):
        page = url.split("/resolve/")[0] if "/resolve/" in url else "the model's page"
        failed_url = getattr(exc, "filename", None) or url
        if token is not None and on_hub(failed_url):
            hint = (
                f"the Hugging Face token from {token.source} was refused: if it expired or "
                f"cannot read this repository, {TOKEN_HELP} with a new one; and accept the "
                f"model's licence on {page}"
            )
        else:
            hint = (
                f"the model is gated or private and no Hugging Face token was sent: {TOKEN_HELP}, "
                f"and accept the model's licence on {page}"
            )
    elif exc.code == 404:
        hint = "check the repository id, file name and revision"
    else:
        hint = "the server may be down; try again later"
    return KitError(f"download of {url} failed with HTTP {exc.code} {exc.reason}: {hint}")


def _reject(part: Path, message: str) -> KitError:
    part.unlink(missing_ok=True)
    return KitError(f"{message}; the partial file {part.name} was removed")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous part file, and return ``dest``.

    Args:
        size: expected size in bytes; checked before and after the transfer.
        sha256: expected hex digest; the file is hashed while it is written.
        timeout: seconds to wait for the connection and for each read.

    The user's Hugging Face token (hub_token) goes with requests to the hub's own origin
    (hub_endpoint) only. Raises KitError for HTTP errors, network failures, a full disk, an
    HTML page or a non-GGUF body where a .gguf was asked for, and size or hash mismatches.
    """
    dest = Path(dest)
    want = sha256.lower() if sha256 else None
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        if want is None or sha256_file(dest, chunk_size) == want:
            return dest
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    hasher = hashlib.sha256()
    if have and want:
        with open(part, "rb") as f:
            while chunk := f.read(chunk_size):
                hasher.update(chunk)
    total = size
    if not (size is not None and have == size):  # a complete part needs no network
        total, hasher = _fetch(url, dest, part, have, size, hasher, progress, timeout, chunk_size)

    got = part.stat().st_size
    if total is not None and got < total:
        raise KitError(f"download stopped at {_mb(got)} of {_mb(total)}; {RESUME_HINT}")
    if total is not None and got > total:
        raise _reject(
            part,
            f"size check failed for {dest.name}: the server has {total} bytes, the part file {got}",
        )
    if size is not None and got != size:
        raise _reject(part, f"size check failed for {dest.name}: expected {size} bytes, got {got}")
    if want and (digest := hasher.hexdigest()) != want:
        raise _reject(part, f"sha256 check failed for {dest.name}: expected {want}, got {digest}")
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    try:  # make the rename itself durable; directories cannot be opened on Windows
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return dest


def _fetch(
    url: str,
    dest: Path,
    part: Path,
    have: int,
    size: int | None,
    hasher: hashlib._Hash,
    progress: bool,
    timeout: float,
    chunk_size: int,
) -> tuple[int | None, hashlib._Hash]:
    """Append the server's bytes to ``part``.

    Returns the full file size the server reported (None if it did not say) and the hasher,
    which is a fresh one when the server ignored the Range and sent the file from the start.
    """
    headers = {"User-Agent": f"research-kit/{research.__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    token = _token_for(url)
    request = urllib.request.Request(url, headers=headers)
    if token is not None:
        request.add_unredirected_header("Authorization", f"Bearer {token.value}")
    opener = urllib.request.build_opener(_HubRedirects(token))
    try:
        resp = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part may already be whole
            match = re.search(r"/(\d+)", exc.headers.get("Content-Range", ""))
            exc.close()
            return (int(match.group(1)) if match else None), hasher
        raise _http_error(url, exc, token) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _network_error(url, exc, part, timeout) from None

    with resp:
        have, total, hasher = _judged(resp, url, dest, part, have, size, hasher)
        _append(resp, url, dest, part, have, total, hasher, progress, timeout, chunk_size)
    return total, hasher


def _judged(resp, url: str, dest: Path, part: Path, have: int, size: int | None, hasher):
    """The response judged before anything is written, so a refused one leaves no bytes behind:
    (bytes kept of the part, the file's full size, the hasher), both reset when the server sent the
    whole file again."""
    if resp.headers.get_content_type() == "text/html":
        raise KitError(
            f"{url} returned an HTML page, not the model file (an error or login page); "
            "check the repository id and file name"
        )
    if resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range)
        if not match or int(match.group(1)) != have:
            raise _reject(
                part,
                f"the server resumed {dest.name} at the wrong place "
                f"({content_range!r}); run the same command again to start over",
            )
        total = int(match.group(2)) if match.group(2) != "*" else None
    elif resp.status == 200:  # no range support: start over from zero
        length = resp.headers.get("Content-Length", "")
        have, total, hasher = 0, (int(length) if length.isdigit() else None), hashlib.sha256()
    else:
        raise KitError(f"download of {url} got unexpected HTTP {resp.status}; try again later")
    if size is not None and total is not None and total != size:
        raise _reject(
            part,
            f"size check failed for {dest.name}: expected {size} bytes, the server has {total}",
        )

    expected = size if size is not None else total
    free = shutil.disk_usage(part.parent).free
    if expected is not None and expected - have > free:
        needed = expected - have
        raise KitError(
            f"not enough disk space for {dest.name}: need {_mb(needed)}, "
            f"{_mb(free)} free in {part.parent}; free some space and run the command again"
        )
    return have, total, hasher


def _append(
    resp, url, dest: Path, part: Path, have: int, total, hasher, progress, timeout, chunk_size
) -> None:
    """The response's bytes appended to the part (a new part when `have` is 0), hashed as they come."""
    try:
        chunk = resp.read(chunk_size)
        if dest.suffix.lower() == ".gguf" and have < 4:
            start = (part.read_bytes()[:have] if have else b"") + chunk[:16]
            if not start.startswith(b"GGUF"):
                raise KitError(
                    f"{url} did not return a GGUF file (it starts with {start!r}); "
                    "check the repository id and file name"
                )
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=dest.name,
            disable=not progress,
            file=sys.stderr,
        )
        with open(part, "ab" if have else "wb") as f, bar:
            while chunk:
                f.write(chunk)
                hasher.update(chunk)
                bar.update(len(chunk))
                chunk = resp.read(chunk_size)
    except (http.client.HTTPException, OSError) as exc:
        if getattr(exc, "errno", None) == errno.ENOSPC:
            msg = f"the disk filled up while writing {part.name}; free some space and {RESUME}"
            raise KitError(msg) from None
        raise _network_error(url, exc, part, timeout) from None

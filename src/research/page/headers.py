"""The headers of every response of the page: a Content-Security-Policy that lets it contact nothing
but its own origin (scripts need the response's nonce), and the other security headers.
"""

from __future__ import annotations

import re
import secrets

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
#: Headers of every response besides the CSP: nothing kept in the browser's disk cache (the
#: streamed answer, the question inside it, the page's layout: a seized device must not hold the
#: conversation after the page stops), no DNS prefetching of the hosts links name (a DNS query
#: leaks the name to the resolver even when nothing is fetched), no referrer sent when a link is
#: clicked, no sniffing content types, not framed, no powerful features.
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
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

    def __init__(self, app, script: str = ""):
        self.app = app
        # The page's own script (research.page.look), at the end of the page's head: it gets the
        # response's nonce as Gradio's own scripts do, so the policy stays as strict as it is.
        if "</script" in script.lower():
            raise ValueError("the page's script must not close its own <script> element")
        self.head = f"<script>{script}</script></head>".encode() if script else b""

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
                body = held["body"].replace(b"</head>", self.head, 1) if self.head else held["body"]
                body = _SCRIPT.sub(b'<script nonce="' + nonce.encode() + b'"', body)
                start = held.pop("start")
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, patched)


_REPLACED = {b"content-security-policy", *(k for k, _ in SECURITY_HEADERS)}

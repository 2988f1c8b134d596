"""A network audit in every Python process of the test session: nothing may leave the device.

Installed as a Python audit hook (sys.addaudithook) in the pytest process and, through the
`sitecustomize` module beside this one (tests/conftest.py puts this folder on PYTHONPATH), in
every Python child the tests start: `research` commands, the page, notebook kernels, the kit's
own children. Each name lookup (getaddrinfo, gethostbyname, gethostbyaddr, getnameinfo) and each
connect or sendto whose address is not this device is refused (OSError) and written, one JSON line,
to the file $RESEARCH_NET_AUDIT names, with the test that was running (PYTEST_CURRENT_TEST, which
children inherit). Each process also notes its command line, so the session can tell which of
the kit's subcommands ran under the audit. conftest.py fails a test with a line of its own and
prints the session's count.

Not seen here: a connection made by C code that does not go through Python's socket module (none
of the kit's native libraries, llama.cpp, libzim or pypdf, has network code) and Chromium's own
requests, which the browser tests count through playwright.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys

ENV = "RESEARCH_NET_AUDIT"
_EVENTS = {
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyname_ex",
    "socket.gethostbyaddr",
    "socket.getnameinfo",
    "socket.connect",
    "socket.sendto",
    "socket.sendmsg",
}
_installed = False


def on_device(host) -> bool:
    """True for this device: loopback addresses and names, the unspecified address, no host.

    `on_device("127.0.0.1")` -> True; `on_device("::ffff:127.0.0.1")` -> True;
    `on_device("s3.amazonaws.com")` -> False; `on_device("10.0.0.1")` -> False.
    """
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip().strip("[]").lower()
    if host in ("", "localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _target(event: str, args: tuple):
    """The host an event would reach, or None when it reaches nothing (a Unix socket)."""
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1] if len(args) > 1 else None
        if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", -1) or not isinstance(address, tuple):
            return None
        return address[0]
    if event == "socket.getnameinfo":
        return args[0][0] if args and isinstance(args[0], tuple) else args[0]
    return args[0] if args else None


def _write(record: dict) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = (json.dumps(record, default=str) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write with O_APPEND: lines of several processes never mix
        finally:
            os.close(fd)
    except OSError:  # a process under test with no room to write (ulimit -f, a full disk): its own business
        pass


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS:
        return
    host = _target(event, args)
    if host is None and event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        return
    if on_device(host):
        return
    _write(
        {
            "pid": os.getpid(),
            "event": event,
            "host": host,
            "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
            "argv": sys.argv[:6],
        }
    )
    raise OSError(f"network audit: {event} to {host!r} refused (nothing may leave the device)")


def install() -> None:
    """Install the hook in this process (once) and note the process's command line."""
    global _installed
    if _installed or not os.environ.get(ENV):
        return
    _installed = True
    sys.addaudithook(_hook)
    _write({"process": os.getpid(), "argv": sys.argv[:6], "orig_argv": getattr(sys, "orig_argv", [])[:8]})

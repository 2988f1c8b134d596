"""Debian's Chromium driven by playwright, for the page's tests in a real browser."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest

from research.measure.page import QUIET_BROWSER

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags that keep Chromium itself from calling home (component updates, safe browsing, ...): the
# same list the kit's own page measurements launch it with.
QUIET = QUIET_BROWSER


@contextmanager
def chromium():
    """A headless Chromium; skipped where none is installed, a failure in CI (which installs it)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=QUIET, headless=True)
        try:
            yield b
        finally:
            b.close()


#: Records every request the page makes and lets through only those to this device, so a test
#: both sees an attempt to reach another host and never lets it out.
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def watch(context) -> list[str]:
    """Route every request of a browser context: off-device ones are recorded and aborted."""
    seen: list[str] = []

    def route(r):
        from urllib.parse import urlsplit

        url = r.request.url
        seen.append(url)
        host = urlsplit(url).hostname
        if url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    context.add_init_script(WATCH)
    return seen


def off_device(urls) -> list[str]:
    """The URLs among `urls` that name another host than this device."""
    from urllib.parse import urlsplit

    return sorted({u for u in urls if urlsplit(u).hostname not in ("127.0.0.1", "localhost", None)})


def watched_tab(browser, url: str, **context):
    """A new context (`context`: playwright's options, e.g. a viewport) whose requests are
    watched (watch), and a tab on `url` once the page is idle: (context, tab, seen URLs)."""
    ctx = browser.new_context(**context)
    seen = watch(ctx)
    tab = ctx.new_page()
    tab.goto(url, wait_until="networkidle")
    return ctx, tab, seen

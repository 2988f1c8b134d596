"""Debian's Chromium driven by playwright, for the page's tests in a real browser."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest

from research.measure.page import QUIET_BROWSER, open_page

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
        if url.startswith(("data:", "blob:")) or on_device(host):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    context.add_init_script(WATCH)
    return seen


def on_device(host: str | None) -> bool:
    """Whether a URL's host is this device: 127.0.0.1, localhost, or a name under .localhost (the
    page's own, research.page.server.private_name), which the browser resolves to loopback."""
    return host is None or host in ("127.0.0.1", "localhost") or host.endswith(".localhost")


def off_device(urls) -> list[str]:
    """The URLs among `urls` that name another host than this device."""
    from urllib.parse import urlsplit

    return sorted({u for u in urls if not on_device(urlsplit(u).hostname)})


def watched_tab(browser, url: str, **context):
    """A new context (`context`: playwright's options, e.g. a viewport) whose requests are
    watched (watch), and a tab on `url` once the page is idle: (context, tab, seen URLs)."""
    ctx = browser.new_context(**context)
    seen = watch(ctx)
    tab = ctx.new_page()
    open_page(tab, url)
    return ctx, tab, seen


def ask(tab, text: str, timeout: int = 30_000) -> None:
    """Type `text` into the page's question box, press Enter and wait until its answer is whole.

    Counted by the page's messages, not by a mark in the text (a hostile answer may hold the
    same mark). Gradio ignores a question sent while the last event is still ending, and may
    clear the box after it was filled: a question the page did not take is sent again.
    """
    from research.page.text import VISUAL

    box = tab.get_by_placeholder("Ask a question…")
    count = "() => document.querySelectorAll('[data-testid=\"user\"]').length"
    asked = tab.evaluate(count)
    for _ in range(5):
        box.fill(text)
        box.press("Enter")
        try:
            tab.wait_for_function(f"() => ({count})() > {asked}", timeout=3_000)
            break
        except Exception:  # not taken: the page was still ending the last answer
            continue
    else:
        raise AssertionError(f"the page never took the question {text!r}")
    # Its answer, finished: its figures drawn (the kit's own element) and nothing streaming.
    tab.wait_for_function(
        f"""() => {{ const a = document.querySelectorAll('[data-testid="bot"]');
              return a.length > {asked} && a[{asked}].querySelector('.{VISUAL}')
                     && !document.querySelector('.generating'); }}""",
        timeout=timeout,
    )

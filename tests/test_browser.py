"""The page in a real headless Chromium: a streamed answer, a thumbs rating, no request off the device."""

import json
from urllib.parse import urlsplit

import pytest
from chromium import on_device

from research.measure.page import browser_cpu_s, open_page

pytestmark = [pytest.mark.browser, pytest.mark.page, pytest.mark.model]


def test_question_answer_rating_and_nothing_leaves_the_device(browser, page, tmp_path):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)  # phone width
    tab = ctx.new_page()
    hosts = []
    tab.on("request", lambda r: hosts.append(urlsplit(r.url).hostname))
    tab.on("websocket", lambda ws: hosts.append(urlsplit(ws.url).hostname))
    open_page(tab, page.open_url)

    box = tab.get_by_placeholder("Ask a question…")
    box.fill("What is the capital of France?")
    box.press("Enter")
    answer = tab.locator(".message.bot, [data-testid='bot']").last
    answer.wait_for(timeout=60_000)
    tab.wait_for_function("() => document.body.innerText.includes('◷')", timeout=90_000)
    assert len(answer.inner_text().strip()) > 0

    # At phone width nothing overflows sideways.
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    tab.screenshot(path=str(tmp_path / "phone.png"), full_page=True)

    before = page.ratings.read_text().count("\n") if page.ratings.exists() else 0
    tab.get_by_label("Like", exact=True).last.click()
    tab.wait_for_function("() => document.body.innerText.includes('Rating saved')", timeout=20_000)
    lines = page.ratings.read_text().splitlines()
    assert len(lines) == before + 1
    rec = json.loads(lines[-1])
    assert rec["thumbs"] == "up" and rec["question"] == "What is the capital of France?"
    ctx.close()

    assert hosts, "the browser should have made requests"
    off_device = sorted({h for h in hosts if not on_device(h)})
    assert off_device == [], f"requests left the device: {off_device}"


def test_the_paint_log_measures_what_the_reader_sees(browser, page):
    """bench --page's instrument on the real page: first painted characters after Ask, tokens a
    second as painted, and the engine's own figures read from the same answer (no speed asserted)."""
    from research.measure import page_speed

    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    ctx.add_init_script(page_speed.RECORDER)
    tab = ctx.new_page()
    open_page(tab, page.open_url)
    used = browser_cpu_s(page.pid)
    got = page_speed.ask(tab, "Write a story about a dragon.", 64)
    assert (
        browser_cpu_s(page.pid) > used
    )  # the browser rendered the answer (the page's process is not counted)
    ctx.close()
    # The same answer asked over the page's API, no browser: the engine's speed from its figures line.
    assert page_speed.over_api(page.client(), "Write a story about a dragon.", 64) > 0
    assert got["tokens"] > 8 and got["paints"] >= 2
    assert got["first_paint_ms"] > 0 and got["painted_tps"] > 0
    assert 0 < got["seen_tps"] < got["tokens"] / (got["first_paint_ms"] / 1e3)  # the wait counts
    assert got["engine_ttft_ms"] > 0 and got["engine_decode_tps"] > 0


def test_confidence_and_answer_only_when_sure_as_the_reader_sees_them(browser, page):
    """In Chromium at phone width: each answer's figures line opens with its confidence in words
    and number; with "Answer only when sure" ticked a doubtful answer reads "I'm not sure." until
    "Show the answer anyway" is pressed (which questions are doubtful is read, not assumed)."""
    from test_page_confidence import DOUBTFUL, SHOWN, SURE

    from research import confidence
    from research.measure import page_speed
    from research.page import host as chat

    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    ctx.add_init_script(page_speed.RECORDER)  # what page_speed.ask reads
    tab = ctx.new_page()
    open_page(tab, page.open_url)
    page_speed._greedy(tab)  # temperature 0, as test_page_confidence asks
    answers = tab.locator(".message.bot, [data-testid='bot']")

    def ask(question: str) -> str:
        """Ask in a new conversation (greedy: the same answer each time), read the answer."""
        page_speed.ask(tab, question, page_speed.SHORT_TOKENS)
        return answers.last.inner_text()

    seen = {}
    for q in (SURE, *DOUBTFUL):
        shown = ask(q)
        m = SHOWN.search("<sub>" + shown[shown.index("◷") :])
        assert m, shown
        assert confidence.label(int(m.group(2)) / 100).startswith(m.group(1))
        seen[q] = int(m.group(2))
    assert seen[SURE] >= confidence.SURE * 100 > min(seen[q] for q in DOUBTFUL)

    tab.get_by_label("Answer only when sure", exact=False).check()
    tab.wait_for_timeout(500)
    doubtful = min(DOUBTFUL, key=seen.get)
    shown = ask(doubtful)
    assert chat.NOT_SURE in shown and f"{seen[doubtful]} %" in shown, shown
    tab.get_by_role("button", name="Show the answer anyway").click()
    tab.wait_for_function(
        f"() => !document.querySelectorAll(\".message.bot, [data-testid='bot']\")"
        f"[0].innerText.includes({json.dumps(chat.NOT_SURE)})",
        timeout=20_000,
    )
    assert chat.NOT_SURE not in answers.last.inner_text()
    assert ask(SURE).split("◷")[0].strip() != chat.NOT_SURE  # a sure answer still shows
    ctx.close()

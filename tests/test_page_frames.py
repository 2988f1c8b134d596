"""An idle tab of the page draws nothing (research.page.look's frame throttle), in Chromium.

Gradio 6's status tracker times a pending event, and its loader animates a spring, at every
animation frame; the page's loading tracker is removed while still pending and both went on
forever: 60 frames a second in an idle tab, about 9 % of a core on this machine, and more of the
browser's time during every answer, on the cores the model decodes on. The page's script makes
such frames wait while no status tracker is shown. A counter put in front of it (an init script
runs before the page's own) sees the frames that reach the browser.
"""

import pytest

from research.measure.page import open_page
from research.page import look

pytestmark = [pytest.mark.browser, pytest.mark.page]

#: Counts the frames asked of the browser itself; installed before the page's script wraps it.
COUNTER = """
window.__frames = 0;
const browserFrame = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = cb => { window.__frames++; return browserFrame(cb); };
"""

#: Stands in for Gradio's status tracker chunk: asks for `n` frames one after another, as its
#: timer does, and says when the last one ran.
TRACKER = """
window.askFrames = n => new Promise(done => {
  const step = () => (--n > 0 ? requestAnimationFrame(step) : done(true));
  requestAnimationFrame(step);
});
"""


@pytest.fixture
def tab(browser, page):
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    ctx.add_init_script(COUNTER)
    stand_in = "**/assets/statustracker-kit-test.js"
    ctx.route(stand_in, lambda r: r.fulfill(body=TRACKER, content_type="text/javascript"))
    tab = ctx.new_page()
    open_page(tab, page.open_url)
    yield tab
    ctx.close()


def frames_over(tab, ms: int) -> int:
    tab.evaluate("window.__frames = 0")
    tab.wait_for_timeout(ms)
    return tab.evaluate("window.__frames")


def test_an_idle_tab_asks_the_browser_for_almost_no_frames(tab):
    tab.wait_for_timeout(1000)  # the page's own start-up frames
    # Before the throttle: 180-360 frames in 3 s (Gradio's leftover timer and loader springs).
    assert frames_over(tab, 3000) <= 10


def test_a_trackers_frames_wait_while_none_is_shown_and_come_at_once_when_one_is(tab):
    tab.evaluate(
        """() => new Promise(loaded => { const s = document.createElement('script');
             s.src = '/assets/statustracker-kit-test.js'; s.onload = loaded; document.head.append(s); })"""
    )
    tab.wait_for_timeout(1000)
    tab.evaluate("window.__frames = 0")
    # No tracker shown: the frames wait (look.IDLE_FRAME_MS each) but their callbacks still run.
    assert tab.evaluate("askFrames(3)") is True
    assert tab.evaluate("window.__frames") == 0
    # A tracker shown (a pending answer's timer): every frame goes to the browser, as in Gradio.
    tab.evaluate(
        """() => { const t = document.createElement('div'); t.dataset.testid = 'status-tracker';
             t.id = 'kit-test-tracker'; t.innerHTML = '<span class="progress-text">0.1s</span>';
             document.body.append(t); }"""
    )
    tab.evaluate("window.__frames = 0")
    assert tab.evaluate("askFrames(3)") is True
    assert tab.evaluate("window.__frames") >= 3
    # Hidden again (Gradio's .hide once the event ends): waiting again.
    tab.evaluate("document.getElementById('kit-test-tracker').classList.add('hide')")
    tab.evaluate("window.__frames = 0")
    assert tab.evaluate("askFrames(2)") is True
    assert tab.evaluate("window.__frames") == 0
    assert look.IDLE_FRAME_MS >= 100  # a few wake-ups a second at most, not 60 frames

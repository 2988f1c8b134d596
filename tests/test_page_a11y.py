"""A page everyone can use (issue 31), in Chromium: axe-core finds nothing at phone and desktop
width in the light and dark themes (empty, answered, panels open, an answer withheld); a whole
question by keyboard alone; what a screen reader hears; and the page at 200 % zoom and with a
phone's large text, with no sideways scrolling and nothing over the conversation's text.

A scripted model answers (tests/scripted_page.py), quickly and the same way each time: each answer
repeats its question, with a low log-probability that a calibration made here reads as "likely
wrong", so "answer only when sure" withholds every answer while it is ticked.
"""

import json
import re

import axe
import numpy as np
import pytest
from fakes import ECHO
from page_server import PageServer
from playwright.sync_api import expect

from research import confidence
from research.confidence import calibration
from research.measure.page import open_page
from research.page import look

pytestmark = [pytest.mark.browser, pytest.mark.page]

ANSWERS = f'#{look.CHAT} [data-testid="bot"]'
PANELS = ("Rate the last answer", "Settings", "Model", "Library", "Export the conversation")
DOUBT = "Who was the mayor of Quellport in 1847?"
#: A question whose answer (it repeats it) streams for seconds: time to press Escape.
LONG = "Tell me the whole history of the city of Paris, from the Romans to this very day. " * 5
#: Words that do not fit a phone's line: they must wrap, not push the page sideways.
UNBROKEN = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch " + "0123456789" * 8


@pytest.fixture(scope="module")
def axe_source():
    return axe.source()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """The page with the scripted model, its confidence calibrated in a data folder of its own."""
    tmp = tmp_path_factory.mktemp("a11y")
    home = tmp / "home"
    rng = np.random.default_rng(0)
    right = (rng.random(60) < 0.45).astype(float)
    signal = rng.normal(-1.5 + 1.2 * right, 0.5)  # right answers come with higher log-probabilities
    sha = "0" * 64  # the scripted model's file hash (tests/scripted_page.py)
    cal = calibration.fit(
        confidence.DEFAULT, ("mean_logprob",), signal[:, None], right, sha, {"source": "test"}
    )
    calibration.save(cal, home / "calibrations", style=calibration.CHAT)  # the page's answers
    script = tmp / "script.json"
    script.write_text(json.dumps({"answers": [ECHO], "logprobs": [-2.5], "delay": 0.01}))
    server = PageServer(tmp, script=script, env={"RESEARCH_HOME": str(home)})
    yield server
    server.stop()


def opened(browser, page, theme="light", **viewport):
    """A new session of the page in a tab of its own: (context, tab)."""
    ctx = browser.new_context(viewport=viewport or {"width": 390, "height": 844}, color_scheme=theme)
    tab = ctx.new_page()
    open_page(tab, page.open_url)
    return ctx, tab


def ask(tab, question: str) -> str:
    """Ask by typing and Enter; the answer once it is written (its figures shown, nothing
    streaming, Stop back at rest)."""
    before = tab.locator(ANSWERS).count()
    box = tab.get_by_role("textbox", name="Question")
    box.fill(question)
    box.press("Enter")
    tab.wait_for_function(
        f"""() => {{ const a = document.querySelectorAll('{ANSWERS}');
          return a.length > {before} && a[a.length - 1].querySelector('.kit-visual')
            && !document.querySelector('.generating'); }}"""
    )
    expect(tab.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    return tab.locator(ANSWERS).last.inner_text()


def open_panels(tab) -> None:
    for name in PANELS:
        tab.get_by_role("button", name=name, exact=True, expanded=False).click()
        expect(tab.get_by_role("button", name=name, exact=True, expanded=True)).to_be_visible()


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("width", [390, 1280])
def test_axe_finds_no_violation_in_any_state(browser, scripted, axe_source, width, theme):
    """Every rule at its default level, on the empty page, after an answer, with every panel open
    and with an answer withheld."""
    ctx, tab = opened(browser, scripted, theme, width=width, height=844)
    assert tab.evaluate("document.body.classList.contains('dark')") == (theme == "dark")
    found = {}

    def audit(state: str) -> None:
        result = axe.audit(tab, axe_source)
        assert result["version"] == axe.VERSION and result["passes"] > 20  # it ran, and judged
        found[state] = result["violations"]
        review = sorted({i.split(":")[0] for i in result["incomplete"]})
        print(  # the figures the README's audit command shows (pytest -s)
            f"axe-core {result['version']}: {width} px, {theme}, {state}: "
            f"{len(result['violations'])} violations, {result['passes']} rules passed, "
            f"{len(review)} for a person to judge {review}"
        )

    audit("empty")
    ask(tab, "What is the capital of France?")
    audit("answered")
    open_panels(tab)
    audit("panels open")
    tab.get_by_role("checkbox", name=re.compile("Answer only when sure")).check()
    assert ask(tab, DOUBT).startswith(confidence.NOT_SURE)
    expect(tab.get_by_role("button", name="Show the answer anyway")).to_be_visible()
    audit("withheld")
    ctx.close()
    assert all(v == [] for v in found.values()), "\n".join(
        f"{state}: {axe.shown(v)}" for state, v in found.items() if v
    )


#: The focused element: its name as the tests call it (its label, its text, else its own name),
#: and whether its focus ring shows (an outline of 2 px or more).
FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const label = e.getAttribute('aria-label') || (e.labels && e.labels[0] && e.labels[0].innerText)
    || e.innerText || e.value || e.tagName;
  const s = getComputedStyle(e);
  return {name: label.replace('▼', '').trim().split('\\n')[0],
          ring: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2};
}"""


def tab_to(tab, name: str, most: int = 40) -> list[dict]:
    """Press Tab until the control called `name` has the focus; the controls passed on the way."""
    passed = []
    for _ in range(most):
        tab.keyboard.press("Tab")
        now = tab.evaluate(FOCUSED)
        passed.append(now)
        if now and now["name"] == name:
            return passed
    raise AssertionError(f"Tab never reached {name!r}: {[p and p['name'] for p in passed]}")


def test_the_keyboard_reaches_every_control_in_order_with_its_focus_seen(browser, scripted):
    ctx, tab = opened(browser, scripted, width=1280, height=900)
    assert tab.evaluate(FOCUSED)["name"] == "Question"  # the question box has the focus to start
    walk = tab_to(tab, "Question", most=80)  # once round the whole page, back to the question box
    ctx.close()
    names = [w["name"] for w in walk if w]
    order = ["Ask", "Regenerate", "Undo", "Clear", "Answer only when sure", *PANELS, "Question"]
    at = [next(i for i, n in enumerate(names) if n.startswith(want)) for want in order]
    assert at == sorted(at), names  # in the order the page reads
    assert "Stop" not in names and "Show the answer anyway" not in names  # nothing they could act on
    assert all(w["ring"] for w in walk if w), [w for w in walk if w and not w["ring"]]


def test_a_whole_question_stop_regenerate_and_rating_by_keyboard_alone(browser, scripted):
    ctx, tab = opened(browser, scripted, width=1280, height=900)
    answers, stop = tab.locator(ANSWERS), tab.get_by_role("button", name="Stop", exact=True)
    assert tab.evaluate(FOCUSED)["name"] == "Question"
    tab.keyboard.insert_text(LONG)
    tab.keyboard.press("Enter")  # Enter asks
    answers.last.wait_for()
    expect(stop).to_be_enabled()  # an answer is being written: Stop can act
    tab.keyboard.press("Escape")  # Escape stops, with the focus still in the question box
    tab.wait_for_function(
        f"() => /cancelled/.test([...document.querySelectorAll('{ANSWERS}')].pop().innerText)"
    )
    expect(stop).to_be_disabled()
    full = f"You asked: {LONG.strip()}"
    assert len(answers.last.inner_text().split("◷")[0].strip()) < len(full)  # stopped short

    tab_to(tab, "Regenerate")
    tab.keyboard.press("Enter")
    tab.wait_for_function(
        f"""() => {{ const a = [...document.querySelectorAll('{ANSWERS}')].pop();
          return a.innerText.includes({json.dumps(full)}) && a.querySelector('.kit-visual'); }}"""
    )
    expect(stop).to_be_disabled()

    tab_to(tab, "Rate the last answer")
    tab.keyboard.press("Enter")
    expect(tab.get_by_role("button", name="Rate the last answer", expanded=True)).to_be_visible()
    tab_to(tab, "4")  # Gradio's choices are one stop each (not one group that arrow keys move in)
    tab.keyboard.press("Space")
    expect(tab.get_by_role("radio", name="4", exact=True)).to_be_checked()
    tab_to(tab, "correct")
    tab.keyboard.press("Space")
    tab_to(tab, "Comment")
    tab.keyboard.insert_text("rated by keyboard")
    tab_to(tab, "Save rating")
    tab.keyboard.press("Enter")
    expect(tab.get_by_text("Saved to")).to_be_visible()
    ctx.close()
    rated = json.loads(scripted.ratings.read_text().splitlines()[-1])
    assert (rated["score"], rated["verdict"], rated["comment"]) == (4, "correct", "rated by keyboard")
    assert rated["answer"] == full  # the regenerated answer, whole


def test_a_screen_reader_hears_each_finished_answer_once_as_sentences(browser, scripted):
    ctx, tab = opened(browser, scripted)
    status, show = tab.locator(f"#{look.STATUS}"), tab.get_by_role("button", name="Show the answer anyway")
    assert (status.get_attribute("role"), status.get_attribute("aria-live")) == ("status", "polite")
    expect(show).to_be_hidden()  # nothing withheld: nothing to show

    ask(tab, "What is the capital of France?")
    expect(status).to_contain_text("Answer: You asked: What is the capital of France?")
    said = status.text_content()
    assert re.search(r"\? Likely wrong, check this: \d+ percent\. \d+ prompt tokens\. First token ", said), (
        said
    )
    assert not re.search(r"·|◷|%|t/s", said), said
    # The conversation as the accessibility tree holds it: the figures once, as sentences; it does
    # not read each streamed fragment aloud, and no message is named by its raw Markdown.
    log = tab.locator(f"#{look.CHAT} [role=log]")
    tree = log.aria_snapshot()
    assert "percent. " in tree and not re.search(r"·|◷|t/s|<sub>", tree), tree
    assert log.get_attribute("aria-live") == "off"
    assert tab.locator("[data-testid=bot][aria-label], [data-testid=user][aria-label]").count() == 0
    expect(show).to_be_hidden()  # a sure-enough answer was not withheld

    tab.get_by_role("checkbox", name=re.compile("Answer only when sure")).check()
    ask(tab, DOUBT)
    expect(status).to_contain_text(f"Answer: {confidence.NOT_SURE} Likely wrong, check this: ")
    show.click()
    expect(status).to_contain_text(f"Answer: You asked: {DOUBT} Likely wrong")
    expect(show).to_be_hidden()  # shown: nothing more to show
    ctx.close()


#: The first answer brought to the top of the conversation, and kept there: Gradio scrolls back to
#: the end once, up to 300 ms after an update, so this is true once it has stayed put for a poll.
FIRST_ON_TOP = """() => {
  const log = document.querySelector('#CHAT [role="log"]');
  const first = log.querySelector('[data-testid="bot"]');
  const off = first.getBoundingClientRect().top - log.getBoundingClientRect().top;
  if (Math.abs(off) > 2) { log.scrollTop += off; window.__still = 0; return false; }
  return ++window.__still > 1;
}""".replace("#CHAT", f"#{look.CHAT}")

#: Lines of the conversation's text with something painted over them (Gradio's floating label did
#: that), sampled every few pixels along each line in view. Elements that let clicks through still
#: cover text: hit-testing counts them for the time of the check.
COVERED = """() => {
  const log = document.querySelector('#CHAT [role="log"]');
  const view = log.getBoundingClientRect();
  const hits = document.createElement('style');
  hits.textContent = '* { pointer-events: auto !important; }';
  document.head.appendChild(hits);
  const paints = e => {
    for (let a = e; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.visibility === 'hidden' || s.display === 'none' || Number(s.opacity) === 0) return false;
    }
    const s = getComputedStyle(e);
    return [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())
      || s.backgroundImage !== 'none' || !/rgba\\(.*, 0\\)$|transparent/.test(s.backgroundColor)
      || ['IMG', 'svg', 'BUTTON', 'INPUT', 'TEXTAREA'].includes(e.tagName);
  };
  const covered = [];
  for (const m of log.querySelectorAll('[data-testid="bot"], [data-testid="user"]')) {
    const texts = document.createTreeWalker(m, NodeFilter.SHOW_TEXT);
    for (let n; (n = texts.nextNode());) {
      if (!n.textContent.trim() || n.parentElement.closest('.sr-only')) continue;
      const range = document.createRange();
      range.selectNodeContents(n);
      for (const r of range.getClientRects()) {
        const y = r.top + r.height / 2;
        if (y < view.top || y > view.bottom) continue;
        for (let x = r.left + 2; x < r.right; x += 6) {
          const top = document.elementsFromPoint(x, y).find(e => m.contains(e) || paints(e));
          if (top && !m.contains(top)) {
            covered.push(n.textContent.trim().slice(0, 30) + ' under ' + (top.className || top.tagName));
            break;
          }
        }
      }
    }
  }
  hits.remove();
  return covered;
}""".replace("#CHAT", f"#{look.CHAT}")
SIDEWAYS = "() => document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"


@pytest.mark.parametrize(
    "viewport, scale",
    [
        ({"width": 640, "height": 450}, 2),  # a 1280 px window at 200 % zoom
        ({"width": 300, "height": 650}, 3.9),  # a 390 px phone (3x) with its text at 130 %
    ],
    ids=["200% zoom", "phone large text"],
)
def test_zoomed_page_reflows_and_nothing_covers_the_answers(browser, scripted, viewport, scale):
    ctx = browser.new_context(viewport=viewport, device_scale_factor=scale)
    tab = ctx.new_page()
    open_page(tab, scripted.open_url)
    assert tab.evaluate(SIDEWAYS) <= 0, "the empty page scrolls sideways"
    ask(tab, LONG)
    ask(tab, f"What does {UNBROKEN} mean?")
    assert tab.evaluate(SIDEWAYS) <= 0, "the conversation pushes the page sideways"
    assert tab.evaluate(COVERED) == []  # at the end of the conversation
    tab.wait_for_function(FIRST_ON_TOP, polling=200)
    assert tab.evaluate(COVERED) == []  # scrolled back to the start of the first answer
    open_panels(tab)
    assert tab.evaluate(SIDEWAYS) <= 0, "an open panel pushes the page sideways"
    ctx.close()

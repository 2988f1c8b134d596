"""Hostile text on the page, in a real browser: nothing it shows makes the browser contact another host.

Hostile strings arrive as questions (typed), as a model's answers (a scripted model that says
them on purpose), in the model's metadata the page shows (its name, type and warning) and in file
names; every request the browser makes is routed through the test, which records it and lets
only this device through. Expected: no request off the device, no Content-Security-Policy
violation (the text never became HTML in the first place), every string shown as text.
"""

import json

import pytest
from chromium import off_device, watched_tab
from page_server import PageServer

from research.page.text import VISUAL

pytestmark = [pytest.mark.browser, pytest.mark.page]

EVIL = "evil.example"
HOSTILE = [
    f'<img src="http://{EVIL}/img.png">',
    f"<img src=x onerror=\"fetch('http://{EVIL}/onerror')\">",
    f"![beacon](http://{EVIL}/md.png)",
    f"![ref][r]\n\n[r]: http://{EVIL}/ref.png",
    f'<svg><image href="http://{EVIL}/svg.png"/></svg>',
    f'<video src="http://{EVIL}/v.mp4" autoplay></video><audio src="http://{EVIL}/a.mp3" autoplay></audio>',
    f'<iframe src="http://{EVIL}/frame"></iframe>',
    f'<link rel="stylesheet" href="http://{EVIL}/s.css"><link rel="prefetch" href="http://{EVIL}/pre">',
    f"<style>body{{background:url(http://{EVIL}/bg.png)}}</style>",
    f'<div style="background-image:url(http://{EVIL}/div.png)">styled</div>',
    f'<object data="http://{EVIL}/o"></object><embed src="http://{EVIL}/e">',
    f'<meta http-equiv="refresh" content="0;url=http://{EVIL}/refresh">',
    f'<form action="http://{EVIL}/form"><input type="image" src="http://{EVIL}/input.png"></form>',
    f'<base href="http://{EVIL}/">relative <img src="rel.png">',
    f'<picture><source srcset="http://{EVIL}/p.png"><img alt="p"></picture>',
    f'<math><mtext><img src="http://{EVIL}/math.png"></mtext></math>',
    f"<img src=\\\\{EVIL}\\backslash.png>",
    f"`unclosed <img src=http://{EVIL}/tick.png>",
    f'```html\n<img src="http://{EVIL}/code.png">\n```',
    f"$\\href{{http://{EVIL}/k}}{{x}}$ and $$\\includegraphics{{http://{EVIL}/tex.png}}$$",
    f'```mermaid\ngraph TD; A-->B; click A "http://{EVIL}/mermaid"\n```',
    f"[a link, followed only when clicked](http://{EVIL}/link) and a bare http://{EVIL}/bare",
]
METADATA = {
    "model_id": f'<img src="http://{EVIL}/id.png">',
    "file_type_name": f"![t](http://{EVIL}/type.png)",
    "warning": f'the template failed: <img src="http://{EVIL}/warn.png"> ![w](http://{EVIL}/w.png)',
}


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripted")
    script = tmp / "script.json"
    script.write_text(json.dumps({"answers": HOSTILE} | METADATA))
    server = PageServer(tmp, script=script)
    yield server
    server.stop()


def test_hostile_questions_answers_and_metadata_reach_nothing(browser, scripted):
    ctx, tab, seen = watched_tab(browser, scripted.open_url, viewport={"width": 390, "height": 844})
    tab.get_by_text("Model:").wait_for(timeout=30_000)
    box = tab.get_by_placeholder("Ask a question…")
    for i, text in enumerate(HOSTILE):
        box.fill(text)
        box.press("Enter")
        tab.wait_for_function(f"() => document.body.innerText.split('◷').length > {i + 1}", timeout=30_000)
        # The answer is painted, but Gradio ignores a new question until this event has ended
        # (its streaming border, .generating, goes): on a loaded machine that is a while later.
        tab.wait_for_function("() => !document.querySelector('.generating')", timeout=30_000)
    tab.wait_for_timeout(1500)  # anything lazy (images, media, fonts) has had its chance
    status = tab.locator("body").inner_text()
    violations = tab.evaluate("window.__violations")
    elements = tab.evaluate(
        """() => [...document.querySelectorAll(
             '.message img, .message iframe, .message video, .message audio, .message object, .message embed,'
           + '.message link, .message style, .message meta, .message form, .message base, .message source,'
           + '.message image, .message input, .message script, .prose img')]
           .filter(e => !e.closest('svg[id^="mermaid"]'))  // the diagram renderer's own styles
           .map(e => e.outerHTML.slice(0, 120))"""
    )
    url = tab.url
    ctx.close()
    assert off_device(seen) == [], "requests left the device"
    assert violations == [], "hostile text became HTML (the CSP stopped it)"
    assert elements == [], "hostile text became elements"
    assert url.rstrip("/") == scripted.url.rstrip("/")  # no navigation without a click
    for text in (METADATA["model_id"], "the template failed: <img", f'<img src="http://{EVIL}/img.png">'):
        assert text in status, (text, status[:300].replace(chr(10), " "))  # shown as the text it is


def test_hostile_file_names_in_errors_reach_nothing(browser, scripted):
    ctx, tab, seen = watched_tab(browser, scripted.open_url)
    tab.get_by_text("Model", exact=True).click()  # the model accordion
    name = f'/tmp/<img src="http://{EVIL}/file.png">![f](http://{EVIL}/f.png).gguf'
    tab.get_by_placeholder("/path/to/model.gguf").fill(name)
    tab.get_by_role("button", name="Load").click()
    tab.get_by_text("opens model files only from").first.wait_for(timeout=20_000)
    tab.wait_for_timeout(1000)
    violations = tab.evaluate("window.__violations")
    ctx.close()
    assert off_device(seen) == [] and violations == []


def test_the_policy_itself_stops_what_gets_past(browser, scripted):
    """Should some HTML ever reach the page, the Content-Security-Policy still lets nothing out."""
    ctx, tab, seen = watched_tab(browser, scripted.open_url)
    tab.evaluate(
        f"""() => {{
        document.body.insertAdjacentHTML('beforeend',
          '<img src="http://{EVIL}/direct.png"><iframe src="http://{EVIL}/f"></iframe>'
          + '<link rel="stylesheet" href="http://{EVIL}/s.css">');
        fetch('http://{EVIL}/fetch').catch(() => null);
        new Image().src = 'http://{EVIL}/image.png';
        const s = document.createElement('script');
        s.textContent = 'window.__ran = 1';
        document.body.append(s);
      }}"""
    )
    tab.wait_for_timeout(1500)
    violations = tab.evaluate("window.__violations")
    ran = tab.evaluate("window.__ran")
    ctx.close()
    assert off_device(seen) == []
    assert len(violations) >= 4 and ran is None  # blocked by the policy, injected script refused


#: Elements that load something or run something; none may come from text.
LOADING = (
    "img, iframe, video, audio, object, embed, link, style, meta, form, base, source, image, input, "
    "script, svg, math, picture, track, frame"
)


def generated(n: int, seed: int) -> list[str]:
    """`n` hostile texts made of test_page_text's pieces, as its property test makes them."""
    import random

    from test_page_text import PIECES

    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(3, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def bypasses(tmp_path_factory):
    """A scripted model that answers with the six bypass shapes, their kin and generated text."""
    import os

    from test_page_text import BYPASSES

    seed = int(os.environ.get("RESEARCH_HOSTILE_SEED", "0")) or __import__("time").time_ns() % 10**6
    answers = list(BYPASSES.values()) + generated(30, seed)
    tmp = tmp_path_factory.mktemp("bypasses")
    script = tmp / "script.json"
    script.write_text(json.dumps({"answers": answers, "delay": 0}))
    server = PageServer(tmp, script=script)
    yield server, answers, seed
    server.stop()


def test_bypass_shapes_and_generated_text_make_no_element_in_chromium(browser, bypasses):
    """Gradio's own renderer in Chromium, the judge that matters: the answers that became an <img>
    with the kit's old code detection, their kin, and 30 generated ones (the seed is printed; set
    RESEARCH_HOSTILE_SEED to run the same again). No loading element, no request off the device,
    no policy violation; and the kit's code element is drawn as code, not shown as its tags."""
    server, answers, seed = bypasses
    print(f"generated hostile answers: seed {seed}")
    ctx, tab, seen = watched_tab(browser, server.open_url, viewport={"width": 390, "height": 844})
    tab.get_by_text("Model:").wait_for(timeout=30_000)
    box = tab.get_by_placeholder("Ask a question…")
    for i in range(len(answers)):
        box.fill(f"q{i}")
        box.press("Enter")
        # The i-th answer, finished: its figures shown (a generated answer may say ◷ itself, so
        # counting that sign could move on before it was written) and nothing streaming.
        tab.wait_for_function(
            f"""() => {{ const a = document.querySelectorAll('[data-testid="bot"]');
              return a.length > {i} && a[{i}].querySelector('.{VISUAL}')
                && !document.querySelector('.generating'); }}""",
            timeout=30_000,
        )
    tab.wait_for_timeout(1500)
    made = tab.evaluate(
        f"() => [...document.querySelectorAll('.message')].flatMap(m => [...m.querySelectorAll('{LOADING}')])"
        ".map(e => e.outerHTML.slice(0, 120))"
    )
    code = tab.evaluate("() => document.querySelectorAll('.message pre code').length")
    violations = tab.evaluate("window.__violations")
    ctx.close()
    assert off_device(seen) == [], f"requests left the device (seed {seed})"
    assert violations == [] and made == [], (seed, made, violations)
    assert code >= 3  # the fenced answers' blocks are drawn as code (the kit's element, as HTML)

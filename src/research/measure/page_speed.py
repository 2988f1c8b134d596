"""`research bench --page`: the chat page at the engine's speed? Measured as the reader sees it.

The real page (research.measure.page.Page) is driven in a real browser, Chromium through
playwright, at phone width on this same device: it stands in for the phone's own browser, which
shares the phone's cores with the model exactly as here. A script in the page timestamps every
change of the answer when it is painted (a MutationObserver, then the next animation frame), so
the figures are what the reader sees: the time from pressing Ask to the first painted
characters, and tokens a second as painted. The engine's own figures for the same answer come
from its line of figures; the engine alone (no page, no browser) answers the same question at
the same thread count in this process, interleaved with the page (engine, page, engine, ...),
and the ratios compare the two side by side.
"""

from __future__ import annotations

import re
import statistics
import time

from research import device
from research.engine import Sampling
from research.errors import KitError
from research.measure.page import QUIET_BROWSER, Page, browser_cpu_s, find_browser, open_page

#: A long answer (decode speed) and a short one (time to first token), asked greedily. The long
#: one runs to the page's default "Max tokens" (the engine's default), on both sides.
LONG = "Write a long story about a cat who learns to fly."
SHORT = "What is the capital of France?"
LONG_TOKENS, SHORT_TOKENS = Sampling().max_tokens, 32
#: How often the harness looks whether the answer is complete. Playwright's default polls at
#: every animation frame, which keeps the browser rendering 60 frames a second on a core the
#: model needs: the harness itself would cost the page what it measures.
POLL_MS = 500

#: Timestamps, in the page, of each painted change of the last answer: [ms, characters].
RECORDER = """
window.__paints = [];
window.__asked = null;
document.addEventListener('keydown', e => {
  if (e.key === 'Enter' && e.target.tagName === 'TEXTAREA') window.__asked = performance.now();
}, true);
window.answers = () => document.querySelectorAll('.message.bot, [data-testid="bot"]');
new MutationObserver(() => {
  const bots = answers();
  const text = bots.length ? bots[bots.length - 1].innerText : '';
  const n = bots.length;
  const seen = [text.length, text.includes('◷'), n, text.slice(0, 30)];
  requestAnimationFrame(() => window.__paints.push([performance.now(), ...seen]));
}).observe(document, {subtree: true, childList: true, characterData: true});
"""
#: What the page shows in a new answer's bubble until its first piece arrives.
PENDING = "Loading content"
FIGURES = re.compile(r"first token ([\d.]+) s · prompt [\d.]+ t/s · (\d+) tokens at ([\d.]+) t/s")


def painted(paints: list, asked: float, tokens: int, speed: bool = True) -> dict:
    """Figures of one answer from its paint log: first paint (ms after Ask), painted tokens/s.

    Two speeds. `seen_tps`, the one a reader lives: every token of the answer over the time from
    pressing Ask to the last paint of its text, waits included; set it against the engine alone's
    tokens over its whole answer (prompt and first token included). `painted_tps`: the pace of the
    text between the first and the last painted change, tokens counted by characters painted
    (tokens x share of the answer's characters: the page paints text, not tokens); it leaves out
    the first token's wait and the first piece, so it can beat the engine it measures, and says
    only how smoothly the text flows. The figures line, painted last, is left out of both; a short
    answer may come in one piece with it, which still gives its first paint (`speed=False`: the
    speeds are then None).
    """
    shown = [
        (t, n, done)
        for t, n, done, _, start in paints
        if t >= asked and n > 0 and not start.startswith(PENDING)
    ]
    if not shown:
        raise KitError("the page painted no answer")
    text = [(t, n) for t, n, done in shown if not done]
    if len(text) < 2:
        if speed:
            raise KitError("the page painted the answer in one piece: too short to measure its speed")
        first = shown[0][0] - asked
        return {
            "first_paint_ms": first,
            "last_paint_ms": first,
            "painted_tps": None,
            "seen_tps": None,
            "paints": len(text),
        }
    (t0, n0), (t1, n1) = text[0], text[-1]
    share = (n1 - n0) / n1 if n1 else 0.0
    return {
        "first_paint_ms": t0 - asked,
        "last_paint_ms": t1 - asked,
        "painted_tps": tokens * share / ((t1 - t0) / 1e3) if t1 > t0 else 0.0,
        "seen_tps": tokens / ((t1 - asked) / 1e3),
        "paints": len(text),
    }


def ask(tab, question: str, max_tokens: int, new_conversation: bool = True) -> dict:
    """Ask in the page as a person would (type, Enter) and read the paint log and the figures.

    By default in a new conversation (the page's Clear first), as `research chat` and the engine
    alone answer it: later in a conversation the prompt holds the earlier answers, and decoding
    after a longer prompt is slower by itself (SmolLM2, 2 threads, alone: 97 t/s after 39 prompt
    tokens, 81 after 743), so a page a few answers in would be compared with a fresher engine.
    """
    if new_conversation and tab.evaluate("answers().length"):
        tab.get_by_text("Clear", exact=True).click()
        tab.wait_for_function("() => answers().length === 0", polling=POLL_MS)
    before = tab.evaluate("answers().length")
    tab.evaluate("window.__paints = []; window.__asked = null")
    box = tab.get_by_placeholder("Ask a question…")
    box.fill(question)
    box.press("Enter")
    done = f"() => window.__paints.some(p => p[3] > {before} && p[2])"  # this answer, figures painted
    tab.wait_for_function(done, timeout=300_000, polling=POLL_MS)
    # Gradio takes no new question until the event has ended (its streaming border goes).
    tab.wait_for_function("() => !document.querySelector('.generating')", timeout=60_000, polling=POLL_MS)
    tab.wait_for_timeout(300)
    answer = tab.locator(".message.bot, [data-testid='bot']").last.inner_text()
    m = FIGURES.search(answer)
    if not m:
        raise KitError(f"the page's answer has no line of figures to read: {answer[-200:]!r}")
    ttft_s, tokens, decode_tps = float(m[1]), int(m[2]), float(m[3])
    paints = [p for p in tab.evaluate("window.__paints") if p[3] > before]
    out = painted(paints, tab.evaluate("window.__asked"), tokens, speed=max_tokens > SHORT_TOKENS)
    return out | {"engine_ttft_ms": ttft_s * 1e3, "engine_decode_tps": decode_tps, "tokens": tokens}


def over_api(client, question: str, max_tokens: int) -> float:
    """The same greedy answer asked of the page over its API (gradio_client, no browser): the
    engine's decode t/s as the page's figures line says it. Beside the browser's figures it tells
    the page's own process from the browser that renders it."""
    from research.page.host import DEFAULT_SYSTEM
    from research.page.messages import KNOBS

    knobs = Sampling(temperature=0, max_tokens=max_tokens, seed=1)
    history, _ = client.predict(
        question, [], DEFAULT_SYSTEM, *(getattr(knobs, k) for k in KNOBS), api_name="/ask"
    )
    m = FIGURES.search(str(history[-1]["content"]))
    if not m:
        raise KitError(f"the page's answer over its API has no line of figures: {str(history[-1])[-200:]!r}")
    return float(m[3])


def engine_alone(model, threads: int, question: str, max_tokens: int) -> dict:
    """The same greedy answer from the engine in this process: no page, no browser."""
    from research.engine import Engine, EngineConfig, conversation
    from research.page.host import DEFAULT_SYSTEM

    engine = Engine.load(model, EngineConfig(n_ctx=4096, n_threads=threads))
    try:
        greedy = Sampling(temperature=0, max_tokens=max_tokens, seed=1)
        engine.answer(conversation("Hello.", DEFAULT_SYSTEM), Sampling(temperature=0, max_tokens=4))  # warm
        _, stats = engine.answer(conversation(question, DEFAULT_SYSTEM), greedy)
    finally:
        engine.close()
    return {
        "ttft_ms": stats.ttft_s * 1e3,
        "decode_tps": stats.decode_tps,
        "tokens": stats.completion_tokens,
        "whole_tps": stats.completion_tokens / stats.total_s,  # the whole answer, prompt and first token in
    }


def measure(
    model=None, threads: list[int] | None = None, reps: int = 2, browser: str | None = None, progress=print
) -> dict:
    """The page in a browser against the engine alone, at each thread count; see the module doc."""
    chromium = browser or find_browser()
    if chromium is None:
        raise KitError("bench --page needs Chromium (apt-get install chromium, or --browser PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise KitError("bench --page needs playwright: pip install playwright") from None
    chosen, why = device.page_threads()
    threads = threads or sorted({chosen, device.default_threads()})
    out = {"browser": chromium, "page_default_threads": chosen, "why": why, "rows": [], "cold_start": None}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=QUIET_BROWSER, headless=True)
        try:
            for t in threads:
                out["rows"].append(_at_threads(b, model, t, reps, progress))
            out["cold_start"] = cold_start(b, model, chosen)
        finally:
            b.close()
    best = max(r["alone_decode_tps"] for r in out["rows"])
    for r in out["rows"]:
        r["painted_over_best_alone"] = r["painted_tps"] / best
    return out


def _at_threads(browser, model, threads: int, reps: int, progress) -> dict:
    progress(f"page with {threads} thread(s) in {browser.version}, {reps} long and short answers ...")
    long_page, short_page, long_alone, short_alone, api = [], [], [], [], []
    with Page(model, "--threads", str(threads)) as page:
        client = page.client()
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        ctx.add_init_script(RECORDER)
        tab = ctx.new_page()
        open_page(tab, page.open_url)
        _greedy(tab)
        for rep in range(reps):  # interleaved: the machine drifts from minute to minute
            long_alone.append(engine_alone(model, threads, LONG, LONG_TOKENS))
            cpu_before, started = browser_cpu_s(page.pid), time.perf_counter()
            long_page.append(ask(tab, LONG, LONG_TOKENS))
            used = browser_cpu_s(page.pid) - cpu_before
            long_page[-1] |= {"browser_cpu_s": used, "browser_share": used / (time.perf_counter() - started)}
            short_page.append(ask(tab, SHORT, SHORT_TOKENS))
            short_alone.append(engine_alone(model, threads, SHORT, SHORT_TOKENS))
            api.append(over_api(client, LONG, LONG_TOKENS) / long_alone[-1]["decode_tps"])
            progress(
                f"  rep {rep + 1}: seen {long_page[-1]['seen_tps']:.1f} t/s from Ask to the last paint "
                f"(engine alone, whole answer {long_alone[-1]['whole_tps']:.1f}); "
                f"painted {long_page[-1]['painted_tps']:.1f} t/s (engine in the page "
                f"{long_page[-1]['engine_decode_tps']:.1f}, alone {long_alone[-1]['decode_tps']:.1f}); "
                f"first paint {short_page[-1]['first_paint_ms']:.0f} ms "
                f"(engine ttft {short_page[-1]['engine_ttft_ms']:.0f}); over the API, no browser: the "
                f"engine in the page at {api[-1]:.0%} of alone"
            )
        ctx.close()
    med = statistics.median
    return {
        "threads": threads,
        "painted_tps": med(r["painted_tps"] for r in long_page),
        "engine_in_page_decode_tps": med(r["engine_decode_tps"] for r in long_page),
        "alone_decode_tps": med(r["decode_tps"] for r in long_alone),
        "seen_tps": med(r["seen_tps"] for r in long_page),
        "alone_whole_tps": med(r["whole_tps"] for r in long_alone),
        "seen_over_alone": med(
            p["seen_tps"] / a["whole_tps"] for p, a in zip(long_page, long_alone, strict=True)
        ),
        "engine_in_page_over_alone": med(
            p["engine_decode_tps"] / a["decode_tps"] for p, a in zip(long_page, long_alone, strict=True)
        ),
        # The same answer asked over the page's API, no browser: the page's process alone.
        "api_over_alone": med(api),
        "api_over_alone_pairs": api,
        "painted_over_alone": med(
            p["painted_tps"] / a["decode_tps"] for p, a in zip(long_page, long_alone, strict=True)
        ),
        "first_paint_ms": med(r["first_paint_ms"] for r in short_page),
        "engine_ttft_ms": med(r["engine_ttft_ms"] for r in short_page),
        "alone_ttft_ms": med(r["ttft_ms"] for r in short_alone),
        "first_paint_over_ttft_ms": med(r["first_paint_ms"] - r["engine_ttft_ms"] for r in short_page),
        "paints_per_s": med(r["paints"] / (r["tokens"] / max(r["painted_tps"], 1e-9)) for r in long_page),
        # The browser's own CPU while a long answer is asked and written, on the cores the model uses.
        "browser_cpu_s": med(r["browser_cpu_s"] for r in long_page),
        "browser_share": med(r["browser_share"] for r in long_page),
        "samples": {"long_page": long_page, "short_page": short_page, "long_alone": long_alone},
    }


def _greedy(tab) -> None:
    """Temperature 0 on the page (the settings accordion's slider), so both sides say the same."""
    tab.get_by_text("Settings", exact=True).first.click()
    number = tab.get_by_role("spinbutton", name="number input for Temperature")  # beside the slider
    number.wait_for(timeout=10_000)  # the accordion opens after the click returns
    number.fill("0")
    tab.keyboard.press("Tab")
    tab.get_by_text("Settings", exact=True).first.click()


def cold_start(browser, model, threads: int) -> dict:
    """Command to a usable page (the Ask box ready in the browser), with its parts as the page
    prints them: imports, model load, server start; then the first render in the browser."""
    t = time.perf_counter()
    with Page(model, "--threads", str(threads)) as page:
        up = time.perf_counter() - t
        tab = browser.new_page(viewport={"width": 390, "height": 844})
        r0 = time.perf_counter()
        tab.goto(page.open_url)
        tab.get_by_placeholder("Ask a question…").wait_for(timeout=60_000)
        render = time.perf_counter() - r0
        tab.close()
        log = page.log.read_text()
    m = re.search(r"start-up: imports ([\d.]+) s · model ([\d.]+) s · server ([\d.]+) s", log)
    parts = dict(zip(("imports_s", "model_s", "server_s"), map(float, m.groups()), strict=True)) if m else {}
    return {
        "command_to_listening_s": up,
        "first_render_s": render,
        "command_to_usable_s": up + render,
        **parts,
    }


def format_page(r: dict) -> str:
    lines = [
        f"the page's default: {r['page_default_threads']} thread(s): {r['why']}",
        f"browser: {r['browser']} at phone width (390 px), on this device beside the model",
        "",
        f"{'threads':>7} {'seen t/s':>8} {'alone, whole':>12} {'seen/alone':>10} {'engine in page':>14} "
        f"{'engine alone':>12} {'in page/alone':>13} {'painted t/s':>11} {'first paint ms':>14} "
        f"{'engine ttft ms':>14} {'paints/s':>8} {'browser CPU s':>13}",
    ]
    for x in r["rows"]:
        lines.append(
            f"{x['threads']:7} {x['seen_tps']:8.1f} {x['alone_whole_tps']:12.1f} "
            f"{x['seen_over_alone']:10.0%} "
            f"{x['engine_in_page_decode_tps']:14.1f} {x['alone_decode_tps']:12.1f} "
            f"{x['engine_in_page_over_alone']:13.0%} {x['painted_tps']:11.1f} {x['first_paint_ms']:14.0f} "
            f"{x['engine_ttft_ms']:14.0f} {x['paints_per_s']:8.1f} "
            f"{x['browser_cpu_s']:6.2f} ({x['browser_share']:.0%})"
        )
    lines += [
        "seen: the answer's tokens over the time from pressing Ask to the last paint of its text, against",
        "the engine alone's tokens over its whole answer (alone, whole); engine in page / alone: decode",
        "speed as each engine reports it; painted: the pace between the first and the last painted change",
        "(no first-token wait: it can beat the engine, and says how smoothly the text flows); browser CPU:",
        "Chromium's CPU-seconds while a long answer is asked and written (its share of a core), taken from",
        "the cores the engine decodes on.",
    ]
    for x in r["rows"]:
        pairs = x["api_over_alone_pairs"]
        lines.append(
            f"no browser ({x['threads']} threads; the long answer asked over the page's API, after each "
            f"pair): the engine in the page at {x['api_over_alone']:.0%} of alone ({min(pairs):.0%}-"
            f"{max(pairs):.0%})"
        )
    c = r.get("cold_start")
    if c:
        lines.append(
            f"\ncold start: command to usable page {c['command_to_usable_s']:.1f} s = listening "
            f"{c['command_to_listening_s']:.1f} s (imports {c.get('imports_s', 0):.1f}, model "
            f"{c.get('model_s', 0):.2f}, server {c.get('server_s', 0):.2f}, Python's own start the rest) + "
            f"first render in the browser {c['first_render_s']:.1f} s"
        )
    return "\n".join(lines)

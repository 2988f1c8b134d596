"""How the page looks, and how it answers the keyboard and screen readers (issue 31).

- theme(): system fonts only (the default theme pulls its fonts from Google, which would leave the
  device), and colours dark or light enough for the contrast WCAG 2.2 AA asks of text (4.5:1) in
  both of Gradio's themes, light and dark: Gradio's Soft theme fell short on its block labels, its
  primary button and its footer.
- CSS: focus always seen (a ring in the accent colour), the chat's label and clear button in a row
  above the conversation instead of floating over its first lines, text a screen reader reads and
  the eye does not (`sr-only`), and long words wrapped so that no width, zoom or text size scrolls
  the page sideways.
- SCRIPT, the page's one script, put in the page by research.page.headers with the response's
  nonce like Gradio's own (the Content-Security-Policy stays as strict): a polite live region that
  says each finished answer once (STATUS), Escape stops a running answer, what Gradio's
  sanitizer takes out of the kit's own markup put back (`aria-hidden` on the figures as shown,
  which research.page.text writes again as sentences for screen readers), and Gradio's frames
  that draw nothing slowed down (below).

Gradio's frames that draw nothing (Gradio 6.31): a status tracker times a pending event, and its
loader animates a spring, at every animation frame until the event ends; the page's loading
tracker is removed while still pending and both go on forever, 60 frames a second in an idle tab
(Chromium drew them: 8.8-9.2 % of a core at rest, `python -m research bench --idle`, and more of
the browser's time during every answer, on the cores the model decodes on). While no status
tracker is shown, a frame asked for from Gradio's status tracker or its animation loop waits
250 ms instead; a shown tracker gets every frame, as before.

The page's layout (demo/app.py) names its components with the ids below.
"""

from __future__ import annotations

from string import Template

from research.page.text import VISUAL

#: Element ids the layout gives its components and the script and CSS find them by.
CHAT, QUESTION, STOP, SHOW_ANYWAY, STATUS = "chat", "question", "stop", "show-anyway", "answer-status"
#: How long a frame asked for by Gradio's status tracker or animation loop waits while no tracker
#: is shown (the module's doc): 4 wake-ups a second instead of 60 frames.
IDLE_FRAME_MS = 250


def theme():
    """Gradio's Soft theme with system fonts and colours that keep their contrast (see above)."""
    import gradio as gr

    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    ).set(
        # Labels of blocks and inputs: indigo 500 on indigo 100 was 3.6:1; 700 is 6.4:1.
        block_label_text_color="*primary_700",
        block_title_text_color="*primary_700",
        # White on indigo 500 was 4.46:1; on 600 it is 6.3:1 (and 8.6:1 on 700 under the pointer).
        button_primary_background_fill="*primary_600",
        button_primary_background_fill_hover="*primary_700",
        checkbox_label_background_fill_selected="*primary_600",
        # Quieter text (the footer, hints) was grey 400 on grey 50, 2.4:1; grey 600 is 7.3:1.
        body_text_color_subdued="*neutral_600",
        # Where to type shows in bright light: the boxes' edges were grey 50 on white.
        input_border_color="*neutral_500",
    )


CSS = Template("""
*, *::before, *::after { animation: none !important; transition: none !important; }
.gradio-container { max-width: 900px !important; margin: auto; }
/* Focus is always seen: a ring outside the control, 3:1 or more against the page in both themes. */
:root { --kit-focus: #4338ca; }
.dark { --kit-focus: #a5b4fc; }
.gradio-container :focus-visible { outline: 3px solid var(--kit-focus) !important; outline-offset: 2px; }
/* The chat's label, its jump-to-the-end arrow and its clear button in a row above the
   conversation, never over its text (Gradio floats them over its first and last lines). */
#$chat > .wrapper { display: grid; grid-template-columns: auto minmax(0, 1fr) auto;
  grid-template-rows: auto minmax(0, 1fr); align-items: center; }
#$chat > .wrapper > label[data-testid="block-label"] { position: static; grid-area: 1 / 1;
  margin: var(--spacing-md); }
#$chat > .wrapper > .scroll-down-button-container { position: static; transform: none;
  grid-area: 1 / 2; justify-self: center; }
#$chat > .wrapper > .top-panel { position: static; grid-area: 1 / 3; margin: var(--spacing-md); }
#$chat > .wrapper > [role="log"] { grid-area: 2 / 1 / 3 / 4; height: 100%; min-height: 0; padding-top: 0; }
/* Read by a screen reader, not shown. */
.sr-only { position: absolute !important; width: 1px; height: 1px; margin: -1px; padding: 0;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
/* No sideways scrolling at any width, zoom or text size: long words and addresses wrap. */
.gradio-container .prose, .gradio-container label { overflow-wrap: break-word; }
@media (max-width: 640px) {
  .gradio-container { padding: 4px !important; }
  #controls button { min-width: 0; }
}
""").substitute(chat=CHAT)

SCRIPT = Template("""(() => {
  "use strict";
  // research.page.look: what the page needs beyond Gradio for the keyboard and screen readers,
  // and Gradio's frames that draw nothing slowed down (the module's doc).
  const frame = window.requestAnimationFrame.bind(window);
  const cancelFrame = window.cancelAnimationFrame.bind(window);
  const waiting = new Map();
  let nextWait = 2 ** 30;  // above any id the browser gives
  // Who asked for the frame: the first of Gradio's own scripts on the stack (not this one). Its
  // status tracker's chunk, or Svelte's animation loop (raf.tick; "at Object.tick (" in Chromium,
  // "tick@" in Firefox).
  function asker() {
    return (new Error().stack || "").split("\\n").find(line => line.includes("/assets/")) || "";
  }
  function idleAsker() {
    if (document.querySelector('[data-testid="status-tracker"]:not(.hide) > *')) return false;
    const line = asker();
    return /\\/statustracker-[^/]*\\.js/.test(line) || /(^|[\\s.])tick[\\s@]/.test(line);
  }
  window.requestAnimationFrame = function (callback) {
    if (!idleAsker()) return frame(callback);
    const id = nextWait++;
    waiting.set(id, setTimeout(() => { waiting.delete(id); callback(performance.now()); }, $wait));
    return id;
  };
  window.cancelAnimationFrame = function (id) {
    if (waiting.has(id)) { clearTimeout(waiting.get(id)); waiting.delete(id); } else cancelFrame(id);
  };
  const ANSWERS = '#$chat [data-testid="bot"]';
  let status = null, said = "";

  // The text of an element as a screen reader gets it: without what is hidden from it.
  function spoken(el) {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('[aria-hidden="true"]').forEach(e => e.remove());
    return copy.textContent.replace(/\\s+/g, " ").trim();
  }

  // Gradio's sanitizer drops aria-hidden from the kit's markup, and names each message with its
  // raw Markdown (markup and all): the figures as shown are hidden again, the names dropped (a
  // screen reader reads the message itself). The conversation itself is not live: it would read
  // each streamed fragment; the status region says each finished answer once.
  function mend() {
    document.querySelectorAll('.$visual:not([aria-hidden])')
      .forEach(e => e.setAttribute("aria-hidden", "true"));
    document.querySelectorAll('#$chat .message [aria-label]').forEach(e => {
      if (/^(user|bot)'s message/.test(e.getAttribute("aria-label"))) e.removeAttribute("aria-label");
    });
    const log = document.querySelector('#$chat [role="log"]');
    if (log && log.getAttribute("aria-live") !== "off") log.setAttribute("aria-live", "off");
    // Gradio's accordions: named by their title alone (not its ▼), and saying whether they are open.
    document.querySelectorAll("button.label-wrap").forEach(b => {
      b.querySelectorAll(".icon:not([aria-hidden])").forEach(i => i.setAttribute("aria-hidden", "true"));
      const open = String(b.classList.contains("open"));
      if (b.getAttribute("aria-expanded") !== open) b.setAttribute("aria-expanded", open);
    });
    // Gradio's picture of an empty value (the export's file list) is named, so it is an image.
    document.querySelectorAll(".empty[aria-label]:not([role])").forEach(e => e.setAttribute("role", "img"));
    // Gradio's footer says "Settings" twice: as text, and as its icon's alternative text.
    document.querySelectorAll("footer button img[alt]").forEach(img => {
      if (img.alt && img.parentElement.textContent.includes(img.alt)) img.alt = "";
    });
  }

  // A finished answer (its figures come last, and nothing is streaming) is said once.
  function announce() {
    const answers = document.querySelectorAll(ANSWERS);
    const last = answers[answers.length - 1];
    if (!last) { said = ""; return; }
    if (document.querySelector(".generating") || !last.querySelector(".$visual")) return;
    const text = spoken(last);
    if (text && text !== said) { said = text; status.textContent = "Answer: " + text; }
  }

  // Escape stops the answer being written, wherever the focus is.
  function key(e) {
    if (e.key !== "Escape" || e.defaultPrevented || e.isComposing) return;
    const stop = document.getElementById("$stop");
    if (stop && !stop.disabled && stop.offsetParent !== null) { e.preventDefault(); stop.click(); }
  }

  function start() {
    status = document.createElement("div");
    status.id = "$status";
    status.className = "sr-only";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    status.setAttribute("aria-atomic", "true");
    document.body.appendChild(status);
    const seen = new MutationObserver(() => { mend(); announce(); });
    seen.observe(document.body, {subtree: true, childList: true, characterData: true,
                                 attributes: true, attributeFilter: ["class"]});
    document.addEventListener("keydown", key);
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();""").substitute(chat=CHAT, stop=STOP, status=STATUS, visual=VISUAL, wait=IDLE_FRAME_MS)

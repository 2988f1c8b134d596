"""The chat page: ask questions of a model running on this device's CPU, with no network.

Run `make demo`, `python -m research demo` or `python demo/app.py`, then open
http://127.0.0.1:7860. Everything the page does lives in research.page.host; this file lays it out.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import sys
import time
from pathlib import Path

from research.page import server

server.offline_environment()  # before gradio is imported: analytics off, no share link
_IMPORTS = time.perf_counter()

import gradio as gr  # noqa: E402

from research import device, files  # noqa: E402
from research.engine import EngineConfig, Sampling  # noqa: E402
from research.errors import KitError  # noqa: E402
from research.models.catalog import resolve  # noqa: E402
from research.page import host as chat  # noqa: E402
from research.page import idle, look  # noqa: E402
from research.page import text as page_text  # noqa: E402
from research.units import MB  # noqa: E402

_IMPORTS = time.perf_counter() - _IMPORTS  # gradio, the kit, llama_cpp: the page's first cost

host = chat.ModelHost(os.environ.get("RESEARCH_MODEL"), EngineConfig())

# System fonts only, colours that keep their contrast, and CSS for the keyboard, screen readers
# and any width (research.page.look; its script is put in the page by research.page.server).
THEME, CSS = look.theme(), look.CSS


def handler(fn):
    """A page handler: KitError becomes a message on the page (as text), and a `sampling`
    parameter receives the seven sampling controls (chat.KNOBS) as one Sampling."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    names = [p.name for p in params]
    if "sampling" in names:
        i = names.index("sampling")
        knobs = [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in chat.KNOBS]
        params = params[:i] + knobs + params[i + 1 :]

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            bound = call.__signature__.bind(*args, **kwargs)
            values = bound.arguments
            if "sampling" in names:
                values["sampling"] = chat.sampling_from(*(values.pop(k) for k in chat.KNOBS))
            result = fn(**values)
            if hasattr(result, "__next__"):
                yield from result
            else:
                yield result
        except KitError as e:
            # Gradio shows the message as HTML: a file name or a template's text must stay text.
            raise gr.Error(html.escape(str(e)), print_exception=False) from None

    call.__signature__ = sig.replace(parameters=params)
    del call.__wrapped__  # Gradio must see the page's inputs, not `sampling`
    return call


@handler
def ask(message, history, system, sampling: Sampling, request: gr.Request):
    """Add the question to the conversation and stream the answer into it."""
    if not (message or "").strip():
        raise KitError("empty question: type a question first")
    history = list(history or []) + [{"role": "user", "content": page_text.shown(message.strip())}]
    yield history, ""
    for shown in host.respond(history, system, sampling, _session(request)):
        yield shown, gr.skip()  # the question box was emptied once: nothing to send or re-render


@handler
def regenerate(history, system, sampling: Sampling, request: gr.Request):
    """Answer the last question again (drops the last answer)."""
    history = list(history or [])
    while history and history[-1]["role"] == "assistant":
        history.pop()
    yield from host.respond(history, system, sampling, _session(request))


@handler
def edited(history, system, sampling: Sampling, evt: gr.EditData, request: gr.Request):
    """An edited question is answered again; an edited answer is kept as the user wrote it (and
    can no longer be rated as the model's)."""
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    history = list(history or [])[: index + 1]
    if not history:
        yield history
        return
    # The typed text comes back as typed: show it as text again.
    history[-1] = {"role": history[-1]["role"], "content": page_text.shown(chat.text_of(evt.value))}
    if history[-1]["role"] == "user":
        yield from host.respond(history, system, sampling, _session(request))
    else:
        yield history


def undo(history):
    """Remove the last exchange and put its question back into the box."""
    history = list(history or [])
    while history and history[-1]["role"] == "assistant":
        history.pop()
    question = page_text.plain(chat.text_of(history.pop()["content"])) if history else ""
    return history, question


def stop(request: gr.Request):
    host.cancel(_session(request))


def answering():
    """While an answer is written, Stop can act (and Escape presses it: research.page.look)."""
    return gr.update(interactive=True)


def answered(history):
    """Once it is written, Stop cannot act; "Show the answer anyway" is offered if it was withheld."""
    return gr.update(interactive=False), offer_anyway(history)


def offer_anyway(history):
    """ "Show the answer anyway" only when the last answer was withheld and still is."""
    return gr.update(visible=host.withheld(history) is not None)


def only_when_sure(on, request: gr.Request):
    """The "answer only when sure" toggle, for this page session."""
    host.answer_only_when_sure(_session(request), bool(on))


@handler
def show_anyway(history):
    """Show the last answer that "answer only when sure" withheld."""
    return host.show_anyway(history)


@handler
def thumbs(history, evt: gr.LikeData):
    """A like or dislike on an answer becomes a rating record of the model that gave it."""
    if evt.liked is None or evt.liked == "":
        return
    liked = evt.liked if isinstance(evt.liked, bool) else str(evt.liked).lower().startswith("like")
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    host.rate(history, index, thumbs="up" if liked else "down")
    gr.Info("Rating saved")


@handler
def save_rating(history, score, verdict, comment):
    """Rate the last answer 1-5 with an optional verdict and comment."""
    if score is None and not verdict:
        raise KitError("choose a score from 1 to 5 or a verdict first")
    path = host.rate(
        history, score=int(score) if score else None, verdict=verdict or None, comment=comment or ""
    )
    return f"Saved to {page_text.literal(path.name)}."


@handler
def load_model(choice, path):
    return _status(host.switch(path or choice))


@handler
def choose_library(name, mode, request: gr.Request):
    """The library this session's answers look things up in, and when (research.library.grounded)."""
    return host.use_library(_session(request), name, mode)


def _libraries():
    from research.library import store as library

    return gr.Dropdown(choices=[chat.NO_LIBRARY, *library.names()])


@handler
def export(history, system):
    md, js = host.export(history, system, os.environ["GRADIO_TEMP_DIR"])
    return [str(md), str(js)]


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", "") or ""


def _status(engine, lit=page_text.literal) -> str:
    """The model line: every value from the file or the user shown as text, never as Markdown
    (`lit`: page_text.literal on the page, files.shown for a terminal: no escape sequence)."""
    info = engine.info
    text = (
        f"**Model:** {lit(engine.model_id)} · {lit(info.file_type_name or '?')} · "
        f"{info.file_size / MB:.0f} MB · context {engine.backend.n_ctx} · "
        f"{engine.backend.n_threads} threads · format {lit(engine.format.name)}"
    )
    text += f"\n\n{lit(chat.confidence.about(engine.sha256))}"  # the numbers' ground, in one line
    return text + (f"\n\n⚠️ {lit(engine.warning)}" if engine.warning else "")


def _initial_status() -> str:
    engine = host.engine
    if engine is not None:
        return _status(engine)
    # Said, not undone: loading is the next question's job (--lazy, or unloaded when idle).
    name = page_text.literal(chat.model_label(host.name))
    if host.unloaded:
        minutes = (host.unload_after_s or 0) / 60
        why = f"unloaded after {minutes:g} min idle to give its memory back"
        return f"**Model:** {name} · {why}; the next question loads it again"
    return f"**Model:** {name} · loads at the first question"


with gr.Blocks(title="Offline question answering", analytics_enabled=False, fill_height=True) as demo:
    gr.Markdown(
        "# Offline question answering\nA quantized model answers on this device's own CPU; nothing leaves it."
    )
    status = gr.Markdown()
    chatbot = gr.Chatbot(
        label="Conversation",
        elem_id=look.CHAT,
        editable="all",
        height="60vh",
        buttons=["copy"],
        feedback_options=("Like", "Dislike"),
        latex_delimiters=[],  # no KaTeX: text that looks like math stays text (research.page.text)
        placeholder="Ask a question below. Small models are often wrong: rate the answers.",
    )
    with gr.Row(elem_id="controls"):
        question = gr.Textbox(
            label="Question",  # its name for a screen reader; the placeholder says it to the eye
            placeholder="Ask a question…",
            show_label=False,
            scale=6,
            autofocus=True,
            max_lines=6,
            elem_id=look.QUESTION,
        )
        send = gr.Button("Ask", variant="primary", scale=1, min_width=60)
        # Only while an answer is written can it be stopped (answering, answered).
        stop_btn = gr.Button(
            "Stop", variant="stop", scale=1, min_width=60, interactive=False, elem_id=look.STOP
        )
    with gr.Row():
        regen_btn = gr.Button("Regenerate", size="sm", min_width=80)
        undo_btn = gr.Button("Undo", size="sm", min_width=60)
        # Not gr.ClearButton: it clears through a JavaScript string, which the page's CSP forbids.
        clear_btn = gr.Button("Clear", size="sm", min_width=60)
    with gr.Row():
        sure = gr.Checkbox(
            False,
            label=f"Answer only when sure: below {chat.confidence.SURE:.0%} likely right, say “I'm not sure”",
        )
        show_btn = gr.Button(
            "Show the answer anyway", size="sm", min_width=80, visible=False, elem_id=look.SHOW_ANYWAY
        )
    with gr.Accordion("Rate the last answer", open=False):
        score = gr.Radio([1, 2, 3, 4, 5], label="Score (5 = best)")
        verdict = gr.Radio(list(chat.ratings.VERDICTS), label="Verdict")
        comment = gr.Textbox(label="Comment", max_lines=3)
        rate_btn = gr.Button("Save rating", size="sm")
        rate_status = gr.Markdown()
    with gr.Accordion("Settings", open=False):
        system = gr.Textbox(chat.DEFAULT_SYSTEM, label="System prompt", max_lines=4)
        with gr.Row():
            temperature = gr.Slider(0, 2, 0.7, step=0.05, label="Temperature (0 = greedy)")
            max_tokens = gr.Slider(16, 2048, 512, step=16, label="Max tokens")
        with gr.Row():
            top_k = gr.Slider(0, 200, 40, step=1, label="Top-k")
            top_p = gr.Slider(0.05, 1, 0.95, step=0.01, label="Top-p")
        with gr.Row():
            min_p = gr.Slider(0, 0.5, 0.05, step=0.01, label="Min-p")
            repeat_penalty = gr.Slider(1, 2, 1.1, step=0.01, label="Repeat penalty")
        seed = gr.Number(-1, label="Seed (-1 = random)", precision=0)
    with gr.Accordion("Model", open=False):
        choice = gr.Dropdown(
            chat.present_models(), value=chat.model_label(host.name), label="Model on this device"
        )
        path = gr.Textbox(label="…or a path to a .gguf file", placeholder="/path/to/model.gguf")
        load_btn = gr.Button("Load", size="sm")
    with gr.Accordion("Library", open=False):
        library_choice = gr.Dropdown(
            [chat.NO_LIBRARY],
            value=chat.NO_LIBRARY,
            label="Answer from your library (python -m research library add)",
        )
        lookup = gr.Radio([(v, k) for k, v in chat.LOOKUP.items()], value="always", label="Look it up")
        library_status = gr.Markdown()
    with gr.Accordion("Export the conversation", open=False):
        export_btn = gr.Button("Export as Markdown and JSON", size="sm")
        exported = gr.File(label="Files", file_count="multiple", interactive=False)

    knobs = [temperature, top_k, top_p, min_p, repeat_penalty, max_tokens, seed]  # chat.KNOBS' order
    model_queue = {
        "concurrency_limit": 1,
        "concurrency_id": "model",
    }  # one answer at a time, others wait in line
    # The page's own steps around an answer: not part of its API, no progress shown on the buttons.
    aside = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}

    def answers(trigger, fn, inputs, outputs, **api):
        """`trigger` answers with `fn`: Stop can act meanwhile, and after it "Show the answer
        anyway" is offered if the answer was withheld. Stop's step goes first: Gradio runs the
        steps of one trigger in turn, and the answer's lasts until it is written."""
        trigger(answering, None, stop_btn, **aside)
        trigger(fn, inputs, outputs, **api, **model_queue).then(
            answered, chatbot, [stop_btn, show_btn], **aside
        )

    answers(send.click, ask, [question, chatbot, system, *knobs], [chatbot, question], api_name="ask")
    answers(
        question.submit,
        ask,
        [question, chatbot, system, *knobs],
        [chatbot, question],
        api_visibility="private",
    )
    answers(regen_btn.click, regenerate, [chatbot, system, *knobs], chatbot, api_name="regenerate")
    answers(chatbot.retry, regenerate, [chatbot, system, *knobs], chatbot, api_visibility="private")
    answers(chatbot.edit, edited, [chatbot, system, *knobs], chatbot, api_visibility="private")
    stop_btn.click(stop, None, None, api_name="stop", queue=False)
    chatbot.clear(offer_anyway, chatbot, show_btn, **aside)
    for changed in (
        undo_btn.click(undo, chatbot, [chatbot, question], api_name="undo"),
        clear_btn.click(lambda: ([], ""), None, [chatbot, question], api_visibility="private", queue=False),
        chatbot.undo(undo, chatbot, [chatbot, question], api_visibility="private"),
        show_btn.click(show_anyway, chatbot, chatbot, api_name="show_anyway"),
    ):
        changed.then(offer_anyway, chatbot, show_btn, **aside)
    chatbot.like(thumbs, chatbot, None, api_visibility="private")
    sure.change(only_when_sure, sure, None, api_name="answer_only_when_sure")
    rate_btn.click(save_rating, [chatbot, score, verdict, comment], rate_status, api_name="rate")
    load_btn.click(load_model, [choice, path], status, api_name="load_model", **model_queue)
    export_btn.click(export, [chatbot, system], exported, api_name="export")
    demo.load(_initial_status, None, status, api_visibility="private")
    demo.load(_libraries, None, library_choice, api_visibility="private")  # added since the page started
    for picked in (library_choice.change, lookup.change):
        picked(choose_library, [library_choice, lookup], library_status, api_visibility="private")


def main(argv: list[str] | None = None) -> int:
    from research.engine import options

    p = options.Parser(prog="research demo", description="Serve the chat page on this device.")
    p.add_argument("--model", help="catalog id or path to a .gguf file (default: the bundled SmolLM2)")
    p.add_argument("--port", type=options.port, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument(
        "--listen-anywhere",
        action="store_true",
        help="allow a non-loopback --host; other machines then reach the page with its printed token",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="with --listen-anywhere: a name other machines use for this one (repeatable; its own "
        "addresses are always accepted, any other name is refused: DNS rebinding)",
    )
    p.add_argument("--ctx", type=options.context, default=4096, help="context size in tokens")
    p.add_argument(
        "--threads",
        type=options.threads,
        help="CPU threads (default: the fast cores but one, which the browser showing the page needs)",
    )
    p.add_argument(
        "--unload-after",
        type=options.UNLOAD_AFTER.arg,
        metavar="MINUTES",
        help="unload the model after this many idle minutes, giving its memory back; the next question "
        "reloads it (0: never; default: 10 on Android/Termux, never elsewhere)",
    )
    p.add_argument(
        "--lazy", action="store_true", help="load the model at the first question, not when the page starts"
    )
    p.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a folder the page's loader may open models from (repeatable; besides the catalog, the "
        "downloads folder and the start model's folder)",
    )
    args = p.parse_args(argv)
    try:
        folders = [options.folder(f) for f in args.models_dir]
        if args.model and os.path.isfile(os.path.expanduser(args.model)):
            folders.append(os.path.dirname(os.path.abspath(os.path.expanduser(args.model))))
        host.name, host.folders = args.model, [Path(f).resolve() for f in folders]
        threads, why = (args.threads, "as asked (--threads)") if args.threads else device.page_threads()
        print(f"threads: {threads} ({why})", file=sys.stderr, flush=True)
        host.config = EngineConfig(n_ctx=args.ctx, n_threads=threads)
        minutes = args.unload_after
        if minutes is None:
            minutes = idle.ANDROID_UNLOAD_AFTER_MIN if idle.on_android() else 0
        host.unload_after_s = minutes * 60 if minutes else None
        if args.lazy:
            resolve(args.model)  # a wrong name fails now, not at the first question
        load_s = time.perf_counter()
        if not args.lazy:
            engine = host.get()  # load now: a bad model fails here, not at the first question
            print(_status(engine, files.shown).replace("**", ""), file=sys.stderr)
            host.idle_soon()
        load_s = time.perf_counter() - load_s
        started = time.perf_counter()

        def ready() -> None:
            server_s = time.perf_counter() - started
            print(
                f"start-up: imports {_IMPORTS:.2f} s · model {load_s:.2f} s · server {server_s:.2f} s",
                file=sys.stderr,
                flush=True,
            )

        server.serve(
            demo.queue(),
            args.host,
            args.port,
            args.listen_anywhere,
            ready,
            allow_hosts=tuple(args.allow_host),
            theme=THEME,
            css=CSS,
        )
    except KitError as e:
        print(f"error: {files.shown(str(e))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

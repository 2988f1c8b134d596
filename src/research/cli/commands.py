"""`python -m research`: the kit's commands. Errors a user can fix print one line, exit 1.

Every number an option takes is checked against its range in `research.engine.options` while the
arguments are parsed, before any model loads; usage errors are one line too (exit 2). An
OSError nothing else caught becomes one line as well; RESEARCH_TRACEBACK=1 shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

from research.cli import eval as cli_eval
from research.cli import library as cli_library
from research.cli.common import engine_from, model_options
from research.engine import CHAT_SYSTEM, options
from research.errors import KitError
from research.files import clean, json_line
from research.llamacpp.build import DEFAULT_TARGETS, KINDS
from research.page import __main__ as page_main


def cmd_models(args) -> None:
    from research.models.catalog import DEFAULT_MODEL, list_models, models_dir

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'id':24} {'quant':7} {'params':>7} {'size':>9}  {'format':10} here")
    for r in rows:
        size = f"{r['size_mb']:.0f} MB" if r["size_mb"] else "?"
        params = f"{r['params_b']:g} B" if r["params_b"] else "?"
        mark = ("bundled" if r["bundled"] else "yes") if r["present"] else "-"
        default = " (default)" if r["id"] == DEFAULT_MODEL else ""
        print(f"{r['id']:24} {r['quant']:7} {params:>7} {size:>9}  {r['format']:10} {mark}{default}")
    print(f"\nDownloads go to {models_dir()}; fetch one with: python -m research download ID")


def cmd_inspect(args) -> None:
    from research.models.catalog import resolve
    from research.models.gguf import format_summary, read_gguf, summarize

    info = read_gguf(resolve(args.model).path)
    # The file's metadata is the file's author's: no escape sequence of theirs reaches the terminal.
    print(json_line(summarize(info), indent=2) if args.json else clean(format_summary(info)))


def cmd_download(args) -> None:
    from research.models.catalog import download_model

    path = download_model(args.id, progress=not args.quiet)
    print(path)


def cmd_build(args) -> None:
    from research.llamacpp import build

    kind = args.kind or ("android" if args.android_ndk else "native")
    if args.check:
        ok, lines = build.check(kind)
        print("\n".join(lines))
        if not ok:
            sys.exit(1)
        return
    record = build.build(args.targets, args.source, kind, args.android_ndk, args.jobs)
    print(json.dumps(record, indent=2))


def _sampling(args):
    from research.engine import Sampling

    return Sampling(
        args.temperature, args.top_k, args.top_p, args.min_p, args.repeat_penalty, args.max_tokens, args.seed
    )


def cmd_chat(args) -> None:
    from research.engine import Stats, conversation, provenance

    if args.lookup and not args.library:
        raise KitError("--lookup chooses when to consult a library: name one with --library NAME")
    engine = engine_from(args)
    if engine.warning:
        print(f"warning: {clean(engine.warning)}", file=sys.stderr)
    sampling = _sampling(args)
    if args.library:
        return cli_library.chat(engine, args, sampling)
    if args.prompt is not None:
        pieces, stats = [], None
        stream = not args.json and args.abstain_below is None  # withholding needs the whole answer first
        for item in engine.stream(conversation(args.prompt, args.system), sampling):
            if isinstance(item, Stats):
                stats = item
            else:
                pieces.append(item)
                if stream:  # the model's text, cleaned: no escape sequence reaches the terminal
                    print(clean(item), end="", flush=True)
        answer, conf = "".join(pieces), _confidence(engine, stats)
        withheld = conf.abstains(args.abstain_below)
        if args.json:
            shown = NOT_SURE if withheld else answer
            extra = {"abstained": withheld, "shown": shown} if args.abstain_below is not None else {}
            made_by = {"provenance": provenance.of(engine, args.system, sampling)}
            print(json_line({"answer": answer, **stats.as_dict(), **conf.as_dict(), **extra, **made_by}))
            return
        if withheld:
            print(NOT_SURE)
            print(f"[{_withheld(conf, args.abstain_below)}: {clean(answer)}]", file=sys.stderr)
        elif not stream:
            print(clean(answer), end="")
        print(f"\n[{_confidence_line(conf)} · {stats.line()}]", file=sys.stderr)
        return
    _interactive(engine, sampling, args.system, args.abstain_below)


#: What "answer only when sure" shows instead of an answer below its threshold.
NOT_SURE = "I'm not sure."


def _confidence(engine, stats):
    from research import confidence

    return confidence.of_stats(stats, engine.sha256)


def _confidence_line(conf) -> str:
    from research import confidence

    if conf.p is None and conf.words == confidence.DAMAGED:
        return f"confidence: {conf.words}"
    if conf.p is None:
        return "confidence: not calibrated for this model (python -m research eval --calibrate)"
    return f"{conf.words} ({conf.method})"


def _withheld(conf, below: float) -> str:
    if conf.unlike:  # its number is no guide: none is said
        return f"withheld, {conf.words}; the model's answer was"
    return f"withheld, {conf.p:.0%} likely right is below {below:.0%}; the model's answer was"


def _interactive(engine, sampling, system, abstain_below=None) -> None:
    from research.engine import Stats, conversation

    print(
        f"Chatting with {engine.model_id}. Empty line or Ctrl-D ends; "
        "Ctrl-C stops an answer; /reset forgets"
        + ("; /show shows an answer withheld." if abstain_below else "."),
        file=sys.stderr,
    )
    history: list[dict] = []
    withheld = ""
    while True:
        try:
            question = input("\n> ").strip()
        except EOFError:
            break
        if not question:
            break
        if question == "/reset":
            history = []
            continue
        if question == "/show":
            print(clean(withheld) or "(no answer was withheld)")
            continue
        answer, cancel = [], threading.Event()
        try:
            for item in engine.stream(conversation(question, system, history), sampling, cancel):
                if isinstance(item, Stats):
                    conf = _confidence(engine, item)
                    if conf.abstains(abstain_below):
                        withheld = "".join(answer)
                        why = conf.words if conf.unlike else f"{conf.p:.0%} likely right"
                        print(f"{NOT_SURE} ({why}; /show shows its answer anyway)", end="")
                    elif abstain_below is not None:
                        print(clean("".join(answer)), end="")
                    print(f"\n[{_confidence_line(conf)} · {item.line()}]", file=sys.stderr)
                else:
                    answer.append(item)
                    if abstain_below is None:
                        print(clean(item), end="", flush=True)
        except KeyboardInterrupt:
            print("\n[stopped]", file=sys.stderr)
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": "".join(answer)}]


def add_models(sub) -> None:
    s = sub.add_parser("models", help="list the model catalog and what is on this device")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_models)


def add_inspect(sub) -> None:
    s = sub.add_parser("inspect", help="architecture, size, quantization mix and template of a GGUF")
    s.add_argument("model", nargs="?", help="catalog id or path (default: the bundled model)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_inspect)


def add_download(sub) -> None:
    s = sub.add_parser("download", help="fetch a catalog model from the Hugging Face hub (needs the network)")
    s.add_argument("id", help="catalog id (see: python -m research models)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_download)


def add_build(sub) -> None:
    s = sub.add_parser("build", help="build llama.cpp's tools (llama-cli, llama-bench, ...) from source")
    s.add_argument(
        "--source", help="a llama.cpp folder (default: the source of the installed llama-cpp-python)"
    )
    s.add_argument(
        "--targets",
        nargs="+",
        default=list(DEFAULT_TARGETS),
        metavar="T",
        help=f"what to build (default: {' '.join(DEFAULT_TARGETS)})",
    )
    s.add_argument(
        "--kind",
        choices=KINDS,
        help="native (default), termux (on the phone), android (NDK), aarch64-linux (cross, runs under qemu)",
    )
    s.add_argument("--android-ndk", metavar="PATH", help="cross-compile for Android arm64 with this NDK")
    s.add_argument(
        "--jobs",
        "-j",
        type=options.JOBS.arg,
        help=f"parallel compile jobs, 1 to {options.THREADS_MAX} (default: all cores; at most 4 in "
        "Termux, where Android kills a build that takes too much memory)",
    )
    s.add_argument(
        "--check",
        action="store_true",
        help="say what is built and whether it matches the installed llama-cpp-python (exit 0 if so)",
    )
    s.set_defaults(func=cmd_build)


def add_chat(sub) -> None:
    s = sub.add_parser("chat", help="ask in the terminal: one answer with --prompt, else a conversation")
    model_options(s)
    s.add_argument("--prompt", "-p", help="one question; prints the answer and a line of figures")
    s.add_argument(
        "--json", action="store_true", help="with --prompt: one JSON object with answer and figures"
    )
    s.add_argument(
        "--system",
        default=CHAT_SYSTEM,
        help="system prompt (default: the page's, on whose answers the confidence shown was fitted; "
        "'' for none)",
    )
    s.add_argument(
        "--temperature", type=options.TEMPERATURE.arg, default=0.7, help="0 = greedy, or more (default 0.7)"
    )
    s.add_argument("--top-k", type=options.TOP_K.arg, default=40, help="0 = off (default 40)")
    s.add_argument("--top-p", type=options.TOP_P.arg, default=0.95, help="above 0, at most 1 (default 0.95)")
    s.add_argument("--min-p", type=options.MIN_P.arg, default=0.05, help="0 to 1; 0 = off (default 0.05)")
    s.add_argument(
        "--repeat-penalty",
        type=options.REPEAT_PENALTY.arg,
        default=1.1,
        help="above 0; 1 = off (default 1.1)",
    )
    s.add_argument(
        "--max-tokens",
        type=options.MAX_TOKENS.arg,
        default=512,
        help=f"{options.MAX_TOKENS.lo} or more (default 512)",
    )
    s.add_argument(
        "--seed",
        type=options.SEED.arg,
        help=f"fix the sampling seed: 0 to {options.SEED.hi} (default: random)",
    )
    s.add_argument(
        "--abstain-below",
        type=options.PROBABILITY.arg,
        metavar="P",
        help='answer only when sure: below P likely right, say "I\'m not sure" and show the answer apart '
        "(--prompt: on stderr; in a conversation: /show)",
    )
    cli_library.chat_options(s)  # --library NAME, --lookup MODE
    s.set_defaults(func=cmd_chat)


def add_doctor(sub) -> None:
    s = sub.add_parser(
        "doctor",
        help="check this machine: CPU, engine build, self-test, tools, memory, disk, folders, offline",
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--no-selftest", action="store_true", help="skip the model self-test in a child")
    s.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> None:
    from research.cli import doctor

    if doctor.main(args):
        sys.exit(1)


def add_demo(sub) -> None:
    s = sub.add_parser("demo", help="serve the chat page on http://127.0.0.1:7860", add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER, help="options of the page (see: research demo --help)")
    s.set_defaults(func=lambda args: page_main.run(args.rest))


def parser() -> argparse.ArgumentParser:
    """The command line: each subcommand's options are defined beside the function that runs it."""
    from research.cli import measure as cli_measure

    p = options.Parser(
        prog="research", description="Offline question answering with quantized LLMs on this device's CPU."
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_models, add_inspect, add_download, add_build, add_chat, add_demo, add_doctor):
        add(sub)
    cli_library.add_library(sub)
    for add in (*cli_measure.COMMANDS, cli_eval.add_eval, cli_eval.add_rescore):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["demo"]:  # the page parses its own options (research demo --help)
            return page_main.run(argv[1:])
        args = parser().parse_args(argv)
        args.func(args)
    except KitError as e:
        print(f"error: {clean(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a last line of defence: a path or a device no check above foresaw
        if os.environ.get("RESEARCH_TRACEBACK"):
            raise
        print(f"error: {_os_error(e)}", file=sys.stderr)
        return 1
    return 0


def _os_error(e: OSError) -> str:
    """`IsADirectoryError(21, "Is a directory", "/tmp")` -> "/tmp: Is a directory"."""
    what = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {what}" if names else what

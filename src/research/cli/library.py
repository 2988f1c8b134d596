"""`python -m research library ...`: the user's offline library, and chat answers grounded in it.

    library add PATH... [--name NAME]     index folders and files (txt, md, html, pdf, zim)
    library update NAME                   read again what changed
    library list | remove NAME            the libraries on this device; delete one's index
    library search NAME "question"        the best passages, with their scores and the time taken
    library show NAME PASSAGE_ID          one passage as text
    library eval NAME [--questions F]...  gained and lost answers per lookup mode (library_eval)
    library bench [--passages 100000]     retrieval time, index size and memory on a synthetic library

research.cli.commands registers `add_library` and hands `chat --library` to `chat()` here.
"""

from __future__ import annotations

import argparse
import json
import sys

from research.engine import options
from research.errors import KitError

#: The context of answers from a library (`library eval`, `eval --library`): three passages,
#: the prompt and a short answer need ~700 tokens.
LIBRARY_CTX = 2048


def _modes(text: str) -> list[str]:
    """An argparse type: "never,unsure" -> ["never", "unsure"]; the lookup modes and the
    evaluation's control, "decoy" (research.library.evaluate.EVAL_MODES)."""
    from research.library.evaluate import EVAL_MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in EVAL_MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(EVAL_MODES)} (comma-separated), not {text!r}")
    return modes


def _name(text: str) -> str:
    from research.library.store import check_name

    try:
        return check_name(text)
    except KitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: Passages in a grounded prompt: at least one; past 10 a small model's context is all passages.
PASSAGES = options.Range(1, 10, unit="passages")
#: The "unsure" mode's confidence threshold: a probability-like score.
THRESHOLD = options.Range(0.0, 1.0, integer=False)
#: Passages of the synthetic bench library: enough to measure, at most what fits in memory here.
BENCH_PASSAGES = options.Range(100, 5_000_000, unit="passages")


def cmd_add(args) -> None:
    from pathlib import Path

    from research.library import build as library_build
    from research.library.store import default_name

    name = args.name or default_name(Path(args.paths[0]))
    print(library_build.add(name, args.paths, progress=not args.quiet).line())


def cmd_update(args) -> None:
    from research.library import build as library_build

    print(library_build.update(args.name, progress=not args.quiet).line())


def cmd_list(args) -> None:
    from research.library import store as library

    rows = [library.Library(n).summary() for n in library.names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(
            f"no libraries yet in {library.libraries_dir()}; "
            "make one with: python -m research library add PATH"
        )
        return
    print(
        f"{'name':20} {'ver':>4} {'files':>6} {'zims':>5} {'skipped':>7} {'passages':>9} {'MB':>7}  updated"
    )
    for r in rows:
        print(
            f"{r['name'][:20]:20} {r['version']:4} {r['files']:6} {r['zims']:5} {r['skipped']:7} "
            f"{r['passages']:9} {r['index_mb']:7.1f}  {r['updated']}"
        )
    print(f"\nkept in {library.libraries_dir()}")


def cmd_remove(args) -> None:
    from research.library import store as library

    path = library.remove(args.name)
    print(f"removed the index of {args.name!r} ({path}); the documents themselves were not touched")


def cmd_search(args) -> None:
    import time

    from research.library import store as library

    lib = library.open_library(args.name)
    t = time.perf_counter()
    hits = lib.search(args.query, args.k)
    took = time.perf_counter() - t
    if args.json:
        print(json.dumps({"hits": [h.as_dict() for h in hits], "retrieval_s": took}, ensure_ascii=False))
        return
    for i, h in enumerate(hits, 1):
        print(f"[{i}] {h.score:.2f}  {h.title}  ({h.source}, passage {h.position}, id {h.id})")
        print(f"    {h.text[:300]}")
    print(f"{len(hits)} passages in {took * 1000:.1f} ms", file=sys.stderr)


def cmd_show(args) -> None:
    from research.page.sources import passage_text

    print(passage_text(args.name, args.passage), end="")  # cleaned of control characters (Library)


def cmd_eval(args) -> None:
    from research.cli.common import engine_from
    from research.library import evaluate as library_eval
    from research.library.grounded import Grounding

    questions = library_eval.load(args.questions or library_eval.default_questions(), args.limit)
    engine = engine_from(args)
    records, summary = library_eval.run(
        engine,
        questions,
        args.name,
        args.modes,
        out=args.out,
        grounding=Grounding(k=args.k, threshold=args.threshold),
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(library_eval.format_summary(summary))
    print(f"records: {args.out or library_eval.default_out(engine, args.name)}", file=sys.stderr)


def eval_options(s) -> None:
    """`eval`'s --library, --compare-closed-book and --lookup options (research.cli.measure)."""
    s.add_argument("--library", type=_name, metavar="NAME", help="answer from this library, citing it")
    s.add_argument(
        "--compare-closed-book",
        action="store_true",
        help="with --library: answer each question closed-book too, and report gained, lost, net and "
        "citation accuracy per lookup mode (never, always, unsure)",
    )
    s.add_argument(
        "--lookup",
        type=_modes,
        metavar="MODES",
        help="with --library: lookup modes, comma-separated (default: always; never,always,unsure with "
        "--compare-closed-book)",
    )


def eval_library(args) -> None:
    """`eval --library NAME [--compare-closed-book]`: the library's evaluation (library_eval) with
    `eval`'s own options; the default questions are the library's set and the kit's general one."""
    from research.cli.common import engine_from
    from research.library import evaluate as library_eval
    from research.library.grounded import MODES

    if not args.library:
        raise KitError("--compare-closed-book and --lookup need a library: add --library NAME")
    modes = args.lookup or (list(MODES) if args.compare_closed_book else ["always"])
    if args.compare_closed_book and "never" not in modes:
        modes = ["never", *modes]  # gained and lost are counted against the closed-book answer
    files = [args.questions] if args.questions else library_eval.default_questions()
    questions = library_eval.load(files, args.limit)
    engine = engine_from(args)
    _, summary = library_eval.run(
        engine, questions, args.library, modes, out=args.out, progress=not args.json
    )
    print(json.dumps(summary, indent=2) if args.json else library_eval.format_summary(summary))
    print(f"records: {args.out or library_eval.default_out(engine, args.library)}", file=sys.stderr)


def cmd_bench(args) -> None:
    from research.library import bench as library_bench

    result = library_bench.bench(args.passages, args.queries, keep=args.keep, progress=not args.quiet)
    print(json.dumps(result, indent=2) if args.json else library_bench.format_bench(result))


def chat(engine, args, sampling) -> None:
    """`chat --library NAME [--lookup MODE]`: one grounded answer (--prompt) or a conversation."""
    from research.engine import Stats
    from research.files import clean  # a passage's escape sequences, repeated, reach no terminal
    from research.library import grounded

    mode = args.lookup or "always"
    history: list[dict] = []
    while True:
        if args.prompt is not None:
            question = args.prompt
        else:
            try:
                question = input("\n> ").strip()
            except EOFError:
                break
            if not question:
                break
        g = grounded.ground(
            engine, args.library, question, mode, system=args.system, history=history, sampling=sampling
        )
        pieces, stats = [], g.closed_stats
        if g.closed_answer is not None and not g.looked_up:
            pieces = [g.closed_answer]
            if not args.json:
                print(clean(g.closed_answer), end="", flush=True)
        else:
            for item in engine.stream(g.messages, sampling):
                if isinstance(item, Stats):
                    stats = item
                else:
                    pieces.append(item)
                    if not args.json:
                        print(clean(item), end="", flush=True)
        answer = "".join(pieces)
        numbers, by = grounded.citations(answer, question, g.sources)
        if args.json:
            record = {"answer": answer, **stats.as_dict(), **g.as_dict(), "cited": numbers, "cited_by": by}
            record["closed_answer"] = g.closed_answer
            print(json.dumps(record, ensure_ascii=False))
        else:
            print()
            for s in g.sources:
                mark = f"  <- cited ({by})" if s.n in numbers else ""
                print(
                    f"[{s.n}] {s.hit.title} ({s.hit.source}, passage {s.hit.position}, id {s.hit.id}){mark}"
                )
            print(f"[{stats.line()} · {g.figures()}]", file=sys.stderr)
        if args.prompt is not None:
            return
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def add_library(sub) -> None:
    from research.cli.common import model_options

    p = sub.add_parser("library", help="your offline library: add documents and ZIM files, search, evaluate")
    lsub = p.add_subparsers(dest="library_command", metavar="ACTION", required=True)

    s = lsub.add_parser(
        "add", help="index folders and files (txt, md, html, pdf, zim); only changes are read"
    )
    s.add_argument("paths", nargs="+", metavar="PATH", help="folders and files")
    s.add_argument("--name", type=_name, help="library name (default: the first path's name)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_add)

    s = lsub.add_parser("update", help="read again the files of a library that changed")
    s.add_argument("name", type=_name)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_update)

    s = lsub.add_parser("list", help="the libraries on this device")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_list)

    s = lsub.add_parser("remove", help="delete a library's index (never the documents)")
    s.add_argument("name", type=_name)
    s.set_defaults(func=cmd_remove)

    s = lsub.add_parser("search", help="the passages that best match a question")
    s.add_argument("name", type=_name)
    s.add_argument("query")
    s.add_argument("-k", type=PASSAGES.arg, default=5, help="passages, 1 to 10 (default 5)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_search)

    s = lsub.add_parser("show", help="one passage, by the id search and chat print")
    s.add_argument("name", type=_name)
    s.add_argument("passage", metavar="PASSAGE_ID")
    s.set_defaults(func=cmd_show)

    s = lsub.add_parser("eval", help="gained and lost answers with the library, per lookup mode")
    s.add_argument("name", type=_name)
    model_options(s, ctx=LIBRARY_CTX)
    s.add_argument(
        "--questions",
        action="append",
        type=options.questions_file,
        metavar="FILE",
        help="question file (repeatable; default: data/library/questions.jsonl and data/qa/*.jsonl)",
    )
    s.add_argument("--limit", type=options.LIMIT.arg, help="the first N questions of each file")
    s.add_argument(
        "--modes",
        type=_modes,
        default=["never", "always", "unsure"],
        help="default never,always,unsure; decoy adds a control: each question given another question's "
        "passages, to tell prompt noise from misleading passages",
    )
    s.add_argument("-k", type=PASSAGES.arg, default=3, help="passages in the prompt at most (default 3)")
    s.add_argument("--threshold", type=THRESHOLD.arg, default=0.5, help="'unsure' looks up below this (0.5)")
    s.add_argument("--out", type=options.output_file, help="records file (default: in your data folder)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_eval)

    s = lsub.add_parser("bench", help="retrieval time, index size and memory over a synthetic library")
    s.add_argument("--passages", type=BENCH_PASSAGES.arg, default=100_000, help="default 100000")
    s.add_argument("--queries", type=options.REPS.arg, default=200, help="searches to time (default 200)")
    s.add_argument("--keep", action="store_true", help="keep the synthetic library (as bench-N)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_bench)


def chat_options(s) -> None:
    """`chat`'s --library and --lookup options."""
    from research.library.grounded import MODES

    s.add_argument(
        "--library", type=_name, metavar="NAME", help="answer from this library, citing its passages"
    )
    s.add_argument(
        "--lookup",
        choices=MODES,
        help="with --library: always (default), never, or unsure (only when the closed-book answer "
        "is unsure)",
    )

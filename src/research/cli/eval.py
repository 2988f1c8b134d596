"""`research eval`: answer a question set and score it, with the confidence signals asked for, a
calibration fitted or refitted on people's ratings, the cost of the free signals, or a library's
gained and lost answers (research.cli.library).
"""

from __future__ import annotations

import json

from research import confidence
from research.cli import library as cli_library
from research.cli.common import engine_from, model_options
from research.engine import options
from research.errors import KitError
from research.measure.signals import signal_cost

#: eval's context: a short question and a short answer need far less.
EVAL_CTX = 1024


def cmd_eval(args) -> None:
    from research.confidence.methods import METHODS
    from research.evaluation import run as evaluate

    _check_as_page(args)
    if args.ctx is None:  # passages need room: the same context as `library eval`
        args.ctx = cli_library.LIBRARY_CTX if args.library else EVAL_CTX
    if args.method is not None and args.method not in METHODS:
        raise KitError(f"unknown confidence method {args.method!r}; choose from {', '.join(METHODS)}")
    if args.from_ratings is not None:
        _calibrate_from_ratings(args)
        return
    if args.library or args.compare_closed_book or args.lookup:  # issue 16: answers from a library
        cli_library.eval_library(args)
        return
    columns = evaluate.Columns(
        args.question_col,
        args.answer_col,
        args.alias_col or None,
        args.id_col or None,
        args.topic_col or None,
    )
    questions = evaluate.load_questions(args.questions, columns)
    if args.signal_cost:
        _signal_cost(args, questions)
        return
    engine = engine_from(args)
    system = evaluate.SYSTEM if args.system is None else args.system
    sampling = evaluate.SETTINGS
    if args.as_page:  # the page's system prompt and sampling; a fixed seed, so a rerun resumes
        from research.engine import CHAT_SYSTEM, Sampling

        system, sampling = CHAT_SYSTEM, Sampling(seed=0)
    if args.fewshot is not None:  # a base model, asked as lm-evaluation-harness's nq_open asks
        from research.engine import prompts

        engine.format = prompts.fewshot_format(prompts.load_shots(args.shots)[: args.fewshot])
        system = ""  # the few-shot description stands in its place
    out = args.out or evaluate.default_out(engine)
    records = evaluate.run(
        engine,
        questions,
        out,
        limit=args.limit,
        system=system,
        sampling=sampling,
        progress=not args.json,
        extra=tuple(args.confidence),
        samples=args.samples,
        method=args.method or "free",
    )
    summary = evaluate.summarize(records)  # this run's records only, one per question
    summary |= evaluate.confidence_report(records, engine.sha256, args.abstain_below, args.method or "")
    run = records[0]["run"] if records else None
    others = [r for r in evaluate.summarize_file(out) if r["run"] != run]
    saved = _calibrate(engine, records, out) if args.calibrate else []
    if args.json:
        print(
            json.dumps(
                summary | {"run": run, "records": str(out), "other_runs": others, "calibrations": saved}
            )
        )
        return
    print(evaluate.format_summary(summary))
    print(f"records: {out} (run {run})")
    for c in saved:
        print(f"calibration {c['id']} saved to {c['path']}")
    if others:
        print(f"the file also holds {len(others)} other run(s), summarized apart:")
        print(evaluate.format_runs(others))


def _check_as_page(args) -> None:
    """KitError in one line for --as-page beside an option that asks otherwise or asks nothing."""
    others = (args.system, args.fewshot, args.from_ratings, args.library, args.lookup)
    if args.as_page and (any(x is not None for x in others) or args.signal_cost or args.compare_closed_book):
        raise KitError(
            "--as-page asks questions as the page does: leave out --system, --fewshot, --from-ratings, "
            "--signal-cost and the library options"
        )


def _calibrate(engine, records: list[dict], out) -> list[dict]:
    """Fit and save a calibration of every method the records carry signals for, on all of them."""
    import hashlib

    from research import confidence
    from research.confidence import calibration, selective, transfer

    saved = []
    for name, method in confidence.METHODS.items():
        X, y, ids = selective.labelled(records, method.signals)
        if len(y) < 2 * calibration.FOLDS or y.sum() < 2 or (1 - y).sum() < 2:
            continue
        first = records[0]
        fitted_on = {
            "source": "eval",
            "path": str(out),
            "run": first.get("run"),
            "prompt_format": first.get("prompt_format"),
            "system": first.get("system"),
            "label": "contains a reference",
            "question_ids": ids,
            "question_ids_sha256": hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest(),
        }
        if method.cost == "samples":  # how many were sampled, and how: eigv counts up to k + 1
            fitted_on["samples"] = first["confidence"]["settings"].get("samples")
        by_id = {r.get("id"): r for r in records}
        cal = transfer.fit_sets(name, method.signals, [by_id[i] for i in ids], X, y, engine.sha256, fitted_on)
        saved.append({"id": cal.id, "path": str(calibration.save(cal)), "held_out": cal.held_out})
    return saved


def _signal_cost(args, questions: list[dict]) -> None:
    """Decode the first --limit questions (default 10) with the free signals on and off, side by side."""
    asked = [q["question"] for q in questions[: args.limit or 10]]
    from research.engine import EngineConfig

    config = EngineConfig(n_ctx=args.ctx, n_threads=args.threads, chat_format=args.format)
    got = signal_cost(args.model, config, asked)
    on, off = got["on"], got["off"]
    print(
        f"free signals: decode {on['tokens'] / on['decode_s']:.1f} t/s with them, "
        f"{off['tokens'] / off['decode_s']:.1f} t/s without ({len(asked)} questions x 2 rounds, "
        f"{on['tokens']} tokens each way): {got['overhead']:+.1%} decode time "
        f"(target at most 5 %); their own timer counts {got['timer_share']:.2%} of decode time"
    )
    print(
        f"question-side signals: prompt evaluation {got['question_ms']:+.1f} ms a question = "
        f"{got['question_share']:+.2%} of an answer's whole time without signals (target under 2 %)"
    )


def _calibrate_from_ratings(args) -> None:
    from research.ratings import store as ratings

    engine = engine_from(args)
    records, _bad = ratings.read(args.from_ratings or None)
    cal, path, n_forced = confidence.recalibrate(engine, records, args.method or confidence.DEFAULT)
    print(
        f"calibration {cal.id} saved to {path}: fitted on {cal.fitted_on['n']} rated answers of "
        f"{engine.model_id} ({cal.fitted_on['right']} right; {n_forced} had their signals recomputed); "
        f"cross-validated AUROC {cal.held_out['auroc']:.2f}, ECE {cal.held_out['ece']:.3f}"
    )


def _signal_kinds(text: str) -> list[str]:
    """An argparse type: "samples,p_true" -> ["samples", "p_true"], each a kind evaluate knows."""
    import argparse

    from research.evaluation.run import EXTRA

    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in EXTRA for n in names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(EXTRA)}, comma-separated, not {text!r}")
    return names


def add_eval(sub) -> None:
    s = sub.add_parser("eval", help="answer a question set and score it (exact match, F1, refusals)")
    # --ctx: None until cmd_eval knows whether --library asks for room for passages
    model_options(s, ctx=None, ctx_said=f"{EVAL_CTX}; {cli_library.LIBRARY_CTX} with --library")
    s.add_argument(
        "--questions",
        type=options.questions_file,
        help="JSONL/CSV/Parquet file, or hf:NAME[:SPLIT] to fetch from the hub "
        "(default: the kit's data/qa set)",
    )
    s.add_argument(
        "--out",
        type=options.output_file,
        help="JSONL records; a rerun of the same run (model file, format, system prompt, settings) into "
        "the same file resumes it (default: evaluations/MODEL.jsonl in the user's data folder)",
    )
    s.add_argument("--system", help="system prompt (default: ask for a few words only)")
    s.add_argument(
        "--as-page",
        action="store_true",
        help="answer as the chat page does by default: its system prompt and sampling (temperature "
        "0.7, repeat penalty 1.1, up to 512 tokens), seed 0: what its confidence is shown on",
    )
    s.add_argument(
        "--limit", type=options.LIMIT.arg, help=f"only the first N questions, {options.LIMIT.lo} or more"
    )
    s.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _column_options(s)
    _confidence_options(s)
    s.add_argument(
        "--fewshot",
        type=options.FEWSHOT.arg,
        metavar="K",
        help="ask as lm-evaluation-harness's nq_open asks a base model: K example questions first, "
        "answers cut at a newline, period or comma, no system prompt",
    )
    s.add_argument("--shots", type=options.input_file, help="examples for --fewshot (default: data/fewshot)")
    s.add_argument(
        "--signal-cost",
        action="store_true",
        help="instead of scoring, decode --limit questions (default 10) with the free confidence signals "
        "on and off, side by side, and print what they cost",
    )
    cli_library.eval_options(s)  # --library NAME, --compare-closed-book, --lookup MODES
    s.set_defaults(func=cmd_eval)


def cmd_rescore(args) -> None:
    from research.evaluation import rescore

    for f in args.files:
        got = rescore.rescore_file(f)
        damaged = f"; {got['damaged']} damaged line(s) dropped" if got["damaged"] else ""
        print(
            f"{f}: {got['records']} records, {got['rescored']} scored again by this scoring code "
            f"({rescore.scorer_key()}), {got['changed']} changed right/wrong{damaged}"
        )


def add_rescore(sub) -> None:
    s = sub.add_parser(
        "rescore",
        help="score again the records of eval or library eval files that older scoring code scored "
        "(no model needed)",
    )
    s.add_argument("files", nargs="+", type=options.input_file, metavar="FILE", help="a records file (JSONL)")
    s.set_defaults(func=cmd_rescore)


def _column_options(s) -> None:
    """The column names of a question file that is not in the kit's shape."""
    s.add_argument("--question-col", default="question")
    s.add_argument("--answer-col", default="answer", help="one string or a list of accepted strings")
    s.add_argument("--alias-col", default="aliases", help="more accepted strings, if the file has them")
    s.add_argument("--id-col", default="id", help="question ids (default: a hash of the question)")
    s.add_argument("--topic-col", default="topic")


def _confidence_options(s) -> None:
    """Which confidence signals to keep, which method to quote, calibrating and abstaining."""
    s.add_argument(
        "--confidence",
        type=_signal_kinds,
        default=[],
        metavar="KINDS",
        help="confidence signals that cost more, comma-separated: samples (--samples more answers: "
        "agreement with the answer and among themselves, semantic entropy), p_true (one more prompt). "
        "The free signals are always kept",
    )
    s.add_argument(
        "--samples",
        type=options.SAMPLES.arg,
        default=confidence.SAMPLES,
        help=f"answers sampled per question for --confidence samples, {options.SAMPLES.describe()} "
        "(default %(default)s, as many as the shipped calibrations were fitted on)",
    )
    s.add_argument(
        "--method",
        help="confidence method for each record's probability and for --abstain-below (default: free for "
        "records; for abstention the kit's chosen method when its calibration was fitted on other "
        "questions, else the page's, free: never the best of the table on the answers it would judge); "
        "see research.confidence.methods.METHODS",
    )
    s.add_argument(
        "--abstain-below",
        type=options.PROBABILITY.arg,
        metavar="P",
        help="also report answers whose held-out probability of being right is below P as refusals",
    )
    s.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a calibration of each method on this run's answers and save it for this model file",
    )
    s.add_argument(
        "--from-ratings",
        nargs="?",
        const="",
        metavar="FILE",
        help="instead of asking questions, calibrate --method (default free) on your ratings of this model "
        "(default: the ratings file in your data folder)",
    )

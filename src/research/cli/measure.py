"""The measuring and evaluating commands: quantize, quality, memory, bench and eval.

Each subcommand's options are defined beside the function that runs it (research.cli.commands assembles
the command line); every number is checked against research.engine.options before any model loads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from research import confidence
from research.cli import library as cli_library
from research.cli.common import THREADS_HELP, engine_from, model_options, models_option
from research.engine import options
from research.errors import KitError
from research.measure.signals import signal_cost
from research.units import MB


def cmd_quantize(args) -> None:
    from research.models import quantize
    from research.models.catalog import resolve

    results = quantize.quantize(
        args.model,
        args.types,
        args.out,
        threads=args.threads,
        allow_upcast=args.allow_upcast,
        force=args.force,
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(quantize.format_table(results, resolve(args.model).path))


def cmd_quality(args) -> None:
    from research.measure import quality

    text = quality.load_corpus(args.corpus)
    if args.reference:
        rows = quality.compare(args.models, args.reference, text, args.ctx, args.chunks, args.threads)
        print(json.dumps(rows, indent=2) if args.json else quality.format_table(rows))
        return
    rows = [quality.perplexity(m, text, args.ctx, args.chunks, args.threads) for m in args.models or [None]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':36} {'MB':>7} {'PPL':>16} {'chunks':>6} {'tokens scored':>13}")
    for r in rows:
        print(
            f"{r['model'][:36]:36} {r['file_size'] / MB:7.1f} {r['ppl']:8.3f} ± {r['ppl_stderr']:5.3f} "
            f"{r['n_chunks']:6} {r['n_tokens_scored']:13}"
        )


def cmd_memory(args) -> None:
    from research.engine import memory
    from research.models.catalog import resolve
    from research.models.gguf import read_gguf

    if args.measure:
        from research.measure import memory as memory_measure

        rows = [r for kv in args.kv_type for r in memory_measure.compare(args.models or [None], args.ctx, kv)]
        print(json.dumps(rows, indent=2) if args.json else memory_measure.format_compare(rows))
        return
    rows = []
    for model in args.models or [None]:
        ref = resolve(model)
        for kv in args.kv_type:
            est = memory.estimate(read_gguf(ref.path), args.ctx, kv, args.cpu)
            rows.append({"model": ref.path.name, "n_ctx": args.ctx, "kv_type": kv, **est.as_dict()})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'model':36} {'ctx':>5} {'kv':5} {'load':>4} {'weights':>8} {'repack':>7} {'KV':>6} "
        f"{'other':>6} {'total MB':>8}"
    )
    for r in rows:
        other = (r["compute"] + r["runtime"]) / MB
        print(
            f"{r['model'][:36]:36} {r['n_ctx']:5} {r['kv_type']:5} {r['load']:>4} "
            f"{r['weights'] / MB:8.0f} {r['repacked'] / MB:7.0f} "
            f"{r['kv_cache'] / MB:6.0f} {other:6.0f} {r['total'] / MB:8.0f}"
        )


def cmd_bench(args) -> None:
    from research.measure import bench

    for out in filter(None, (args.json, args.csv)):  # before minutes of measuring, not after
        if not Path(out).expanduser().parent.is_dir():
            raise KitError(f"cannot write {out}: no folder {Path(out).parent}")
    _check_bench_fits(args.models or [None], args.pp, args.tg)

    if args.page:
        from research.measure import page_speed

        if len(args.models) > 1 or args.compare or args.idle is not None:
            raise KitError("--page measures one model's page at a time, without --compare or --idle")
        model = args.models[0] if args.models else None
        result = page_speed.measure(model, args.threads, args.reps, args.browser, progress=_progress)
        print(page_speed.format_page(result))
        if args.json:
            _write(args.json, lambda f: json.dump(result, f, indent=2))
            print(f"JSON: {args.json}")
        return
    if args.idle is not None:
        from research.measure import page as page_bench

        if len(args.models) > 1 or args.compare:
            raise KitError("--idle measures one model's page at a time, without --compare")
        result = page_bench.idle(
            args.models[0] if args.models else None, args.idle, args.browser, progress=_progress
        )
        print(page_bench.format_idle(result))
        if args.json:
            _write(args.json, lambda f: json.dump(result, f, indent=2))
            print(f"JSON: {args.json}")
        return
    if args.compare:
        if len(args.models) > 1:
            raise KitError("--compare takes one model at a time")
        if args.threads and len(args.threads) > 1:
            raise KitError("--compare takes one thread count at a time")
        from research.measure import compare as bench_compare

        result = bench_compare.compare(
            args.models[0] if args.models else None,
            args.threads[0] if args.threads else None,
            args.pp,
            args.tg,
            args.reps,
        )
        print(bench_compare.format_compare(result))
        if args.json:
            _write(args.json, lambda f: json.dump(result, f, indent=2))
            print(f"\nJSON: {args.json}")
        return
    rows = bench.sweep(args.models, args.threads, args.pp, args.tg, args.reps, not args.no_llama_bench)
    print(bench.format_rows(rows))
    if args.json:
        _write(args.json, lambda f: json.dump(rows, f, indent=2))
        print(f"JSON: {args.json}")
    if args.csv:
        _write(args.csv, lambda f: bench.write_csv(rows, f))
        print(f"CSV: {args.csv}")


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _write(path: str, fill) -> None:
    """Write an output file through fill(file); a path that cannot be written is one line."""
    try:
        with open(path, "w", newline="") as f:
            fill(f)
    except OSError as e:
        raise KitError(f"cannot write {path}: {e.strerror}") from None


def _check_bench_fits(models: list, pp: int, tg: int) -> None:
    """KitError unless pp + tg fit each model's trained context, from its header, before loading.

    bench sizes its context as pp + tg + 64 and the engine caps it at the trained context: a
    prompt longer than that would be built word by word and refused only after minutes.
    """
    from research.models.catalog import resolve
    from research.models.gguf import read_gguf

    need = pp + tg + options.BENCH_SLACK
    for model in models:
        ref = resolve(model)
        trained = read_gguf(ref.path).context_length
        if trained and need > trained:
            raise KitError(
                f"--pp {pp} and --tg {tg} need a {need}-token context (with {options.BENCH_SLACK} for the "
                f"chat template) and {ref.path.name} was trained on {trained}: lower --pp or --tg"
            )


#: eval's context: a short question and a short answer need far less.
EVAL_CTX = 1024


def cmd_eval(args) -> None:
    from research.confidence.methods import METHODS
    from research.evaluation import run as evaluate

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
        progress=not args.json,
        extra=tuple(args.confidence),
        samples=args.samples,
        method=args.method or "free",
    )
    summary = evaluate.summarize(records)  # this run's records only, one per question
    summary |= evaluate.trust(records, engine.sha256, args.abstain_below, args.method or "")
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


def _calibrate(engine, records: list[dict], out) -> list[dict]:
    """Fit and save a calibration of every method the records carry signals for, on all of them."""
    import hashlib

    from research import confidence
    from research.confidence import calibration, selective

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
        cal = calibration.fit(name, method.signals, X, y, engine.sha256, fitted_on)
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


def add_quantize(sub) -> None:
    s = sub.add_parser(
        "quantize", help="write a ladder of quantized files (Q4_0 ... Q8_0, k-quants) from one GGUF"
    )
    s.add_argument("model", nargs="?", help="catalog id or path of the source (default: the bundled model)")
    s.add_argument(
        "--types",
        required=True,
        help="comma-separated: "
        + ", ".join(
            [
                "Q4_0",
                "Q4_1",
                "Q5_0",
                "Q5_1",
                "Q8_0",
                "F16",
                "Q2_K",
                "Q3_K_S",
                "Q3_K_M",
                "Q3_K_L",
                "Q4_K_S",
                "Q4_K_M",
                "Q5_K_S",
                "Q5_K_M",
                "Q6_K",
            ]
        ),
    )
    s.add_argument("--out", required=True, help="folder for the files (FILE.TYPE.gguf)")
    s.add_argument(
        "--allow-upcast",
        action="store_true",
        help="also write types above the source's precision (bigger, not better: speed or KLD reference)",
    )
    s.add_argument("--force", action="store_true", help="rewrite files that already exist")
    s.add_argument(
        "--threads",
        type=options.THREADS.arg,
        help=f"threads, 1 to {options.THREADS_MAX} (default: all cores)",
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_quantize)


def add_quality(sub) -> None:
    s = sub.add_parser("quality", help="perplexity over a corpus; with --reference also KL divergence")
    models_option(s)
    s.add_argument(
        "--reference", help="model whose token distributions the others are compared with (e.g. the F16 file)"
    )
    s.add_argument(
        "--corpus", type=options.input_file, help="a UTF-8 text file (default: data/corpus/persuasion.txt)"
    )
    s.add_argument(
        "--ctx",
        type=options.CTX.arg,
        default=512,
        help=f"tokens per chunk, {options.CTX.lo} or more; the second half is scored (default 512)",
    )
    s.add_argument(
        "--chunks",
        type=options.CHUNKS.arg,
        help=f"only the first N chunks, {options.CHUNKS.lo} or more (default: the whole text)",
    )
    s.add_argument("--threads", type=options.THREADS.arg, help=THREADS_HELP)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_quality)


def add_memory(sub) -> None:
    s = sub.add_parser("memory", help="predict a model's peak memory before loading; --measure checks it")
    models_option(s)
    s.add_argument(
        "--ctx",
        type=options.CTX.arg,
        default=4096,
        help=f"context size in tokens, {options.CTX.lo} or more (default 4096)",
    )
    s.add_argument(
        "--kv-type",
        type=options.kv_types,
        default=["f16"],
        help="KV-cache types: f16,q8_0,q4_0 (default f16)",
    )
    s.add_argument(
        "--cpu",
        choices=["x86-avx2", "x86-avx512", "arm-dotprod", "other"],
        help="predict for this CPU kind's weight repacking (default: this machine's)",
    )
    s.add_argument(
        "--measure", action="store_true", help="also load each model in a fresh process and measure"
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_memory)


def add_bench(sub) -> None:
    s = sub.add_parser("bench", help="prompt and generation speed; --compare runs llama-bench side by side")
    models_option(s)
    s.add_argument(
        "--compare",
        action="store_true",
        help="also run llama-bench (built from the same llama.cpp) and print the ratios",
    )
    s.add_argument(
        "--idle",
        nargs="?",
        const=60.0,
        type=options.IDLE_SECONDS.arg,
        metavar="SECONDS",
        help="the chat page at rest: CPU, wake-ups and memory over SECONDS (default 60), with and "
        "without a browser tab, and after it unloads its model",
    )
    s.add_argument(
        "--page",
        action="store_true",
        help="the chat page in a real browser on this device: first painted characters and tokens/s as "
        "painted, against the engine alone, at each --threads (--reps answers each)",
    )
    s.add_argument("--browser", metavar="PATH", help="Chromium to open the page in (default: found on PATH)")
    s.add_argument(
        "--threads",
        type=options.threads_list,
        help="CPU threads, a list sweeps them: 1,2,4 (default: physical cores)",
    )
    s.add_argument(
        "--pp", type=options.PP.arg, default=512, help=f"prompt tokens, {options.PP.lo} or more (default 512)"
    )
    s.add_argument(
        "--tg",
        type=options.TG.arg,
        default=128,
        help=f"generated tokens, {options.TG.lo} or more: a decode speed needs two (default 128)",
    )
    s.add_argument(
        "--reps", type=options.REPS.arg, default=5, help=f"repetitions, {options.REPS.lo} or more (default 5)"
    )
    s.add_argument(
        "--json",
        metavar="FILE",
        type=options.output_file,
        help="write the figures as JSON (llama-bench's field names)",
    )
    s.add_argument(
        "--csv",
        metavar="FILE",
        type=options.output_file,
        help="write the rows as CSV (llama-bench's field names)",
    )
    s.add_argument(
        "--no-llama-bench", action="store_true", help="measure the kit only, even if llama-bench is built"
    )
    s.set_defaults(func=cmd_bench)


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
        "--limit", type=options.LIMIT.arg, help=f"only the first N questions, {options.LIMIT.lo} or more"
    )
    s.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    s.add_argument("--question-col", default="question")
    s.add_argument("--answer-col", default="answer", help="one string or a list of accepted strings")
    s.add_argument("--alias-col", default="aliases", help="more accepted strings, if the file has them")
    s.add_argument("--id-col", default="id", help="question ids (default: a hash of the question)")
    s.add_argument("--topic-col", default="topic")
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
        "questions, else the best-ranking one); see research.confidence.methods.METHODS",
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


#: The subcommands this module adds, in the order `research --help` lists them.
COMMANDS = (add_quantize, add_quality, add_memory, add_bench, add_eval)

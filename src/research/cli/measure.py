"""The measuring commands: quantize, quality, memory and bench (eval: research.cli.eval).

Each subcommand's options are defined beside the function that runs it (research.cli.commands assembles
the command line); every number is checked against research.engine.options before any model loads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from research.cli.common import THREADS_HELP, models_option
from research.engine import options
from research.errors import KitError
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


#: The subcommands this module adds, in the order `research --help` lists them.
COMMANDS = (add_quantize, add_quality, add_memory, add_bench)

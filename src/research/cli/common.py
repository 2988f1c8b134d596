"""What several commands share: the options that name and load a model, and the engine they load.

One place for them, below every command module (research.cli.commands, .library, .measure), so no
command module imports another for an option.
"""

from __future__ import annotations

import argparse

from research.engine import options


def engine_from(args):
    from research.engine import Engine, EngineConfig

    return Engine.load(
        args.model, EngineConfig(n_ctx=args.ctx, n_threads=args.threads, chat_format=args.format)
    )


THREADS_HELP = f"CPU threads, 1 to {options.THREADS_MAX} (default: physical cores)"


def models_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help="catalog ids or paths (default: the bundled model)"
    )


def model_options(p: argparse.ArgumentParser, ctx: int | None = 4096, ctx_said: str = "%(default)s") -> None:
    """--model, --ctx (default `ctx`, told in --help as `ctx_said`), --threads and --format."""
    p.add_argument("--model", "-m", help="catalog id or path to a .gguf file (default: the bundled SmolLM2)")
    p.add_argument(
        "--ctx",
        type=options.CTX.arg,
        default=ctx,
        help=f"context size in tokens, {options.CTX.lo} or more (default {ctx_said})",
    )
    p.add_argument("--threads", type=options.THREADS.arg, help=THREADS_HELP)
    p.add_argument(
        "--format",
        help="chat format: chatml, orca-mini, llama3, phi3, gemma, or template "
        "(default: the file's own template)",
    )

"""`python -m research`: the command line. commands (the parser and the chat, models, inspect,
download, build, demo and doctor commands), common (the options they share), library (the `library`
command, chat --library), measure (quantize, quality, memory, bench), eval, and doctor (the
machine's checks).

May import: everything.
"""

from research.cli.commands import main

__all__ = ["main"]

"""`python -m research.page` (and `research demo`): the chat page, demo/app.py run with the page's
own options (`--help` lists them)."""

from __future__ import annotations

import runpy
import sys

from research.errors import KitError
from research.paths import REPO_ROOT


def run(rest: list[str]) -> int:
    """Run demo/app.py as a script with the page's own options; its exit code."""
    app = REPO_ROOT / "demo" / "app.py"
    if not app.is_file():
        raise KitError(f"the page {app} is missing: run the kit from its repository checkout")
    sys.argv = [str(app), *rest]
    try:
        runpy.run_path(str(app), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    return 0


if __name__ == "__main__":
    try:
        sys.exit(run(sys.argv[1:]))
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

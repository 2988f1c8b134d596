"""Where the kit keeps things: its own data in the checkout, people's data and caches outside it.

The checkout's `data/` holds what ships with the kit (the catalog, question sets, corpus). What
people make (ratings, evaluation records, and what later features keep) lives in a per-user
data folder, so `git clean -xfd` or a fresh clone never loses it; downloads and build trees
live in a per-user cache folder, which may be deleted at any time.

| what | default | override |
|---|---|---|
| people's data | `$XDG_DATA_HOME/research`, else `~/.local/share/research` | `RESEARCH_HOME` |
| caches | `$XDG_CACHE_HOME/research`, else `~/.cache/research` | `RESEARCH_CACHE_DIR` |
| the kit's data | `data/` in the checkout | `RESEARCH_DATA_DIR` |
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def kit_data_dir() -> Path:
    """The kit's own data (catalog, question sets, corpus): $RESEARCH_DATA_DIR, else data/ in the checkout."""
    return _env_path("RESEARCH_DATA_DIR") or REPO_ROOT / "data"


def user_data_dir() -> Path:
    """People's data (ratings, evaluation records): $RESEARCH_HOME, else the XDG data home.

    `user_data_dir()` -> `~/.local/share/research` when neither variable is set.
    """
    xdg = _env_path("XDG_DATA_HOME")
    return _env_path("RESEARCH_HOME") or (xdg or Path.home() / ".local" / "share") / "research"


def cache_dir() -> Path:
    """Caches that can be rebuilt (downloads, builds, hashes): $RESEARCH_CACHE_DIR, else the XDG cache."""
    xdg = _env_path("XDG_CACHE_HOME")
    return _env_path("RESEARCH_CACHE_DIR") or (xdg or Path.home() / ".cache") / "research"

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

People's data is private: what the kit makes in the data folder is readable by its owner only
(folders 0700, files 0600: private_dir, write_private, private_tree).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The folder that holds the `research` package: the working folder of the kit's child processes,
#: so that `python -m research...` imports this kit and not a same-named file where the user is.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


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


#: People's data is theirs alone: the folders the kit makes for it are readable by their owner
#: only, and so are its files (a library's index holds the text of the user's documents and the
#: names of their files; a calibration or a rating says which model they use and what they asked).
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: str | os.PathLike) -> Path:
    """Folder `path`, made with every missing folder above it as PRIVATE_DIR; the kit's own
    folders inside the data folder (libraries/, calibrations/...) are made private again when an
    older version left them readable by others. The data folder itself, or a folder the user
    named, keeps the mode it has. Returns `path`.

    `private_dir(user_data_dir() / "libraries" / "mine")` -> that folder, mode 0700.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            pass  # made meanwhile by another process
    home = user_data_dir()
    if path.is_relative_to(home):
        p = path
        while p != home:
            _tighten(p, PRIVATE_DIR)
            p = p.parent
    return path


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077 and not path.is_symlink():
            path.chmod(mode)
    except OSError:
        pass  # gone, or not ours to change: what was there stays as it was


def private_tree(folder: str | os.PathLike) -> None:
    """Every folder under `folder` (itself too) PRIVATE_DIR and every file PRIVATE_FILE: for what a
    library (bm25s, NumPy) writes with the process's umask."""
    folder = Path(folder)
    _tighten(folder, PRIVATE_DIR)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            _tighten(Path(root, d), PRIVATE_DIR)
        for f in files:
            _tighten(Path(root, f), PRIVATE_FILE)


def write_private(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` as a PRIVATE_FILE, through a temporary file and one rename: a crash
    leaves the old file, never half a new one. Its folder is made with private_dir."""
    path = Path(path)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # a part file left by a crash may have had another mode
        view = memoryview(data.encode() if isinstance(data, str) else data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path

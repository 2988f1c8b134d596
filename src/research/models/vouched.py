"""Which model files the kit vouches for; the others are tried in a child process at every load.

A hostile or damaged GGUF can make llama.cpp abort (CVE-2024-21802, CVE-2025-53630, ...), which
would end the interpreter, and with it the page and every session on it. The header is validated
in Python first (research.models.gguf); then a file the kit cannot vouch for (anything but the
bundled model and catalog downloads of the right size) is loaded and made to answer a few tokens
in a child process at every load (research.engine.selftest), so a crash ends the child only. A file the
kit vouches for is tried so once per engine build and CPU.
"""

from __future__ import annotations

from pathlib import Path

from research.models.catalog import ModelRef, models_dir


def trusted(ref: ModelRef) -> bool:
    """Files the kit can vouch for: the bundled model and catalog downloads of the right size."""
    entry = ref.entry
    if entry is None:
        return False
    if entry.bundled:  # the package's own file, not any file of the same name
        return ref.path.resolve() == (entry.local_path() or Path("/nonexistent")).resolve()
    return ref.path.parent == models_dir().resolve() and entry.size == ref.path.stat().st_size

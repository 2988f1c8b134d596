"""axe-core, the accessibility engine behind Lighthouse's audit, for the page's browser tests.

It comes from the npm registry as Chromium comes from Debian: pinned to one version and to the
sha512 the registry publishes for its tarball, fetched by `make test` (and so by CI's .ci/run)
into the kit's cache folder, never into the checkout. `python tests/axe.py` fetches it by hand.
The tests read it from there, or from the file RESEARCH_AXE names; where it is missing they are
skipped with the command to run, and fail in CI, as tests/chromium.py does for Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run as a script by make

from research import paths  # noqa: E402

VERSION = "4.14.1"
#: The registry's own `dist.integrity` of axe-core-4.14.1.tgz (npm view axe-core@4.14.1 dist.integrity).
INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
HOW = "python tests/axe.py (npm fetches axe-core into the kit's cache; make test does it too)"


def path() -> Path:
    """axe.min.js: the file RESEARCH_AXE names, else the pinned version in the kit's cache folder."""
    named = os.environ.get("RESEARCH_AXE", "").strip()
    return Path(named) if named else paths.cache_dir() / "axe-core" / VERSION / "axe.min.js"


def integrity(data: bytes) -> str:
    """npm's integrity string of a tarball: "sha512-" and the base64 of its SHA-512."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch() -> Path:
    """axe.min.js of the pinned version, from the npm registry through npm, checked against
    INTEGRITY, into the cache (a no-op when it is there). RuntimeError saying what went wrong."""
    target = path()
    if target.is_file():
        return target
    if os.environ.get("RESEARCH_AXE", "").strip():  # a file of the user's own: not fetched over it
        raise RuntimeError(f"RESEARCH_AXE names {target}, which is not there")
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (apt-get install npm), so axe-core cannot be fetched")
    with tempfile.TemporaryDirectory(prefix="axe-") as tmp:
        done = subprocess.run(
            [npm, "pack", f"axe-core@{VERSION}", "--silent", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            timeout=300,
        )
        tgz = Path(tmp) / f"axe-core-{VERSION}.tgz"
        if done.returncode or not tgz.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"npm pack axe-core@{VERSION} failed: {last}")
        data = tgz.read_bytes()
    if integrity(data) != INTEGRITY:
        raise RuntimeError(f"axe-core-{VERSION}.tgz does not match its pinned sha512: not used")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {name: tar.extractfile(f"package/{name}").read() for name in ("axe.min.js", "LICENSE")}
    target.parent.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        part = target.parent / f".{name}.part"
        part.write_bytes(content)
        part.replace(target.parent / name)  # whole or not at all
    return target


def source() -> str:
    """The text of axe.min.js for a test: skipped with the command to run where it is missing,
    a failure in CI (whose .ci/run fetches it through make test)."""
    import pytest

    found = path()
    if not found.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"axe-core {VERSION} is not at {found}; {HOW}")
        pytest.skip(f"axe-core {VERSION} is not fetched: {HOW}")
    return found.read_text(encoding="utf-8")


#: axe.run with every rule at its default level (WCAG 2.0-2.2 A and AA and the best practices that
#: are on by default), the result cut down to what a failing test prints.
RUN = """async () => {
  const r = await axe.run(document, {resultTypes: ['violations']});
  return {version: axe.version, passes: r.passes.length,
    incomplete: r.incomplete.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')),
    violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 160),
        why: n.failureSummary}))}))};
}"""


def audit(tab, axe_source: str) -> dict:
    """axe-core run in the page of playwright tab `tab` as it is now: {version, passes,
    incomplete, violations}. The script is evaluated through the browser's debugging protocol,
    so the page's own Content-Security-Policy stays as users get it."""
    if not tab.evaluate("() => typeof window.axe === 'object'"):
        tab.evaluate(axe_source)
    return tab.evaluate(RUN)


def shown(violations: list[dict]) -> str:
    """Violations in a few lines, for an assertion message."""
    return "\n".join(
        f"{v['id']} ({v['impact']}, {len(v['nodes'])}): {v['help']}; "
        + "; ".join(f"{n['target']} {n['html']!r} {n['why']}" for n in v["nodes"][:4])
        for v in violations
    )


def main() -> int:
    try:
        print(f"axe-core {VERSION}: {fetch()}")
    except RuntimeError as e:
        print(f"axe-core: {e}", file=sys.stderr)
        # Only CI must have it; elsewhere the page's audit tests skip and say how to get it.
        return 1 if os.environ.get("CI") else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests/fakes.py

import pytest  # noqa: E402

AUDIT_DIR = Path(__file__).parent / "audit"
SRC_DIR = Path(__file__).resolve().parents[1] / "src"


def pytest_configure(config):
    """People's data goes to a folder of this test session, never the user's own (ratings,
    evaluation records, calibrations, libraries): set before any test, notebook or child starts.

    And the network audit (tests/audit/research_netaudit.py) is switched on for this process and,
    through PYTHONPATH, for every Python process started after it: xdist's workers, the kit's
    commands, the page, notebook kernels. The controller makes the log; workers inherit it."""
    import os
    import tempfile

    config.addinivalue_line("markers", "tries_network: the test makes an off-device attempt on purpose")
    os.environ["RESEARCH_HOME"] = tempfile.mkdtemp(prefix="research-test-home-")
    if not os.environ.get(AUDIT_ENV):
        os.environ[AUDIT_ENV] = str(Path(tempfile.mkdtemp(prefix="research-net-audit-")) / "audit.jsonl")
    # The code under test first for every child (not whatever copy of the kit is installed), then
    # the audit's sitecustomize.
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    wanted = [str(SRC_DIR), str(AUDIT_DIR)]
    rest = [p for p in paths if p and p not in wanted]
    os.environ["PYTHONPATH"] = os.pathsep.join([*wanted, *rest])
    from research import offline  # the kit's own offline switches, before any test imports a library

    offline.apply()
    sys.path.insert(0, str(AUDIT_DIR))
    import research_netaudit

    research_netaudit.install()


AUDIT_ENV = "RESEARCH_NET_AUDIT"


def audit_records() -> list[dict]:
    """Every line the network audit wrote so far in this session (all processes)."""
    import json
    import os

    try:
        text = Path(os.environ[AUDIT_ENV]).read_text()
    except (KeyError, OSError):
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def off_device(records: list[dict]) -> list[dict]:
    return [r for r in records if "event" in r]


@pytest.fixture(autouse=True)
def _nothing_leaves_the_device(request):
    """Fail a test during which any process tried a lookup or connection off the device (the
    audit refused it), unless the test is marked tries_network because it does so on purpose.
    One test runs at a time (-n 1), so what the audit logged meanwhile belongs to this test."""
    before = len(audit_records())
    yield
    new = off_device(audit_records()[before:])
    if not new:
        return
    if request.node.get_closest_marker("tries_network"):
        import research_netaudit

        research_netaudit._write({"expected": request.node.nodeid, "count": len(new)})
        return
    shown = "; ".join(f"{r['event']} {r['host']!r} by {' '.join(map(str, r['argv']))[:80]}" for r in new[:3])
    pytest.fail(f"network audit: {len(new)} attempt(s) to leave the device: {shown}", pytrace=False)


def _subcommands_run(records: list[dict]) -> set[str]:
    """The kit's subcommands that ran in a process under the audit (`python -m research CMD`)."""
    out = set()
    for r in records:
        argv = [str(a) for a in r.get("orig_argv") or []]
        if "-m" in argv:
            i = argv.index("-m")
            if argv[i + 1 : i + 2] == ["research"] and len(argv) > i + 2:
                out.add(argv[i + 2])
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The audit's count, printed in CI's output: attempts off the device, processes audited,
    and the kit's subcommands that ran under it."""
    if hasattr(config, "workerinput"):
        return
    records = audit_records()
    attempts = off_device(records)
    expected = sum(r["count"] for r in records if "expected" in r)
    processes = [r for r in records if "process" in r]
    ran = _subcommands_run(records)
    terminalreporter.write_sep("-", "network audit")
    terminalreporter.write_line(
        f"network audit: {len(attempts) - expected} lookups or connections off loopback "
        f"({expected} more made on purpose by tests marked tries_network), all refused, in "
        f"{len(processes)} audited processes"
    )
    terminalreporter.write_line(f"the kit's subcommands run under it: {', '.join(sorted(ran)) or 'none'}")
    for r in attempts[:20]:
        during = r.get("test") or "?"
        terminalreporter.write_line(f"  {r['event']} {r['host']!r} during {during}: {r['argv']}")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the tests of one module (tests/chromium.py)."""
    from chromium import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def page(tmp_path_factory):
    """The real chat page on the bundled model, on a free loopback port."""
    from page_server import PageServer

    server = PageServer(tmp_path_factory.mktemp("page"))
    yield server
    server.stop()


#: llama.cpp's own tools that the tests run: llama-cli (test_build), llama-perplexity (test_quality)
#: and llama-bench. One build call for all three, so llama.cpp's libraries compile once per session.
LLAMA_TOOLS = ("llama-cli", "llama-perplexity", "llama-bench")


@pytest.fixture(scope="session")
def llama_tools():
    """llama.cpp's tools built from the installed llama-cpp-python's own source: the build record.

    Incremental and cached in ~/.cache/research/llama.cpp (RESEARCH_BUILD_DIR): the first build
    compiles for minutes on two cores, an up-to-date one takes about a second.
    """
    from research.llamacpp import build

    return build.build(list(LLAMA_TOOLS))

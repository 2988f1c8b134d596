import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests/fakes.py

import pytest  # noqa: E402


def pytest_configure(config):
    """People's data goes to a folder of this test session, never the user's own (ratings,
    evaluation records, calibrations, libraries): set before any test, notebook or child starts."""
    import os
    import tempfile

    os.environ["RESEARCH_HOME"] = tempfile.mkdtemp(prefix="research-test-home-")


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
    from research import build

    return build.build(list(LLAMA_TOOLS))

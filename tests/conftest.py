import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests/fakes.py

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def page(tmp_path_factory):
    """The real chat page on the bundled model, on a free loopback port."""
    from page_server import PageServer

    server = PageServer(tmp_path_factory.mktemp("page"))
    yield server
    server.stop()

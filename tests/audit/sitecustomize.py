"""Loaded by every Python process started with tests/audit on PYTHONPATH: the network audit."""

import research_netaudit

research_netaudit.install()

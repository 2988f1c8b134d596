"""The switches that keep the libraries the kit uses offline, set in one place.

huggingface_hub and datasets look things up on the network unless told not to (datasets sends a
download-count request for every local file it loads), and gradio reports usage; each reads its
switch from the environment when it is first imported. The kit sets them when the `research`
package is imported, before any of those libraries is, so every command, the page, the
notebooks and every child process the kit starts inherit them. The one command that goes online
on purpose, `research download`, uses its own HTTP client and reads none of them.
"""

from __future__ import annotations

import os

#: Each switch and the value that keeps its library off the network.
SWITCHES = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: no request to the hub
    "HF_DATASETS_OFFLINE": "1",  # datasets: no download count, no hub lookup for local files
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",  # gradio: no usage report, no version check
    "DO_NOT_TRACK": "1",
}


#: Set (to "1") only in the child that fetches a question set from the hub when the user asks
#: for one (`eval --questions hf:NAME`, research.qa.questions): the one process left online.
ONLINE = "RESEARCH_ONLINE"


def apply() -> None:
    """Set every switch in this process's environment (inherited by its children)."""
    if os.environ.get(ONLINE) == "1":
        return
    os.environ.update(SWITCHES)

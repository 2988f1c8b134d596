"""Offline question answering with quantized LLMs on the device's own CPU.

The kit is a set of packages that import only downward, in this order (LAYERS):

    base modules (errors, units, paths, offline, child, hashing, jsonl, files, registry, device,
    energy) < qa < models < llamacpp < engine < ratings < confidence < evaluation < library
    < page < measure < selection < paper < cli

Each package's __init__ says what lives there. tests/test_layout.py holds the kit to it: no import
cycle, no import up the layers, no module over 450 lines and no function over 80.
"""

from research import offline
from research.errors import KitError

# Before any library that reads them is imported: huggingface_hub, datasets, gradio
# (research.offline). Every command, the page, the notebooks and the kit's children inherit them.
offline.apply()

#: The packages from the bottom up; "base" is the modules directly under research/.
LAYERS = (
    "base",
    "qa",
    "models",
    "llamacpp",
    "engine",
    "ratings",
    "confidence",
    "evaluation",
    "library",
    "page",
    "measure",
    "selection",
    "paper",
    "cli",
)

__all__ = ["LAYERS", "KitError", "__version__"]
__version__ = "0.1.0"

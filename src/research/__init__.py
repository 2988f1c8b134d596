"""Offline question answering with quantized LLMs on the device's own CPU."""

from research import offline
from research.errors import KitError

# Before any library that reads them is imported: huggingface_hub, datasets, gradio
# (research.offline). Every command, the page, the notebooks and the kit's children inherit them.
offline.apply()

__all__ = ["KitError", "__version__"]
__version__ = "0.1.0"

"""Offline question answering with quantized LLMs on the device's own CPU."""

from research.errors import KitError

__all__ = ["KitError", "__version__"]
__version__ = "0.1.0"

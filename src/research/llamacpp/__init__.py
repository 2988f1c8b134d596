"""llama.cpp itself: build flags that are safe on the CPU in hand and the engine built with them
(flags), llama.cpp's own tools built from the same source (build), what each flag does (notes), and
llama-bench driven and read (bench).

May import: the base modules (errors, paths, child, device, units) and research.models. Nothing here
imports a third-party package at import time: `python -m research.llamacpp.flags install` runs
before the kit's dependencies are installed.
"""

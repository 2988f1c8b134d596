"""llama.cpp itself: build flags that are safe on the CPU in hand and the engine built with them
(flags), llama.cpp's own tools built from the same source (build), what each flag does (notes), and
llama-bench driven and read (bench).

May import: the base modules (errors, paths, child, device, units) and research.models. flags
imports nothing outside the standard library and this package's __init__ imports nothing:
`python -m research.llamacpp.flags install` runs before the kit's dependencies are installed.
"""

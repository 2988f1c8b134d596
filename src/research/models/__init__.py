"""Model files: the catalog and resolving a name to a file (catalog), downloads (download), the
bounded GGUF reader (gguf), the quantization ladder (quantize), and which files the kit vouches
for (vouched).

May import: the base modules only.
"""

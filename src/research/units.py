"""One unit for memory across the kit: MB means 2**20 bytes (a mebibyte).

It is the unit /proc, llama.cpp's logs and `free -m` count in, and every figure the kit prints
or records in MB (memory, file sizes, budgets) uses it; speeds in bytes a second (memory
bandwidth) stay decimal GB/s, as hardware sheets give them.
"""

MB = 2**20


def mb(n_bytes: float) -> float:
    """Bytes in MB: `mb(3 * 2**20)` -> 3.0."""
    return n_bytes / MB

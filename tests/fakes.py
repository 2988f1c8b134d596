"""A scripted stand-in for llama.cpp: characters are tokens, answers come from a script."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

EOG = 0


class FakeBackend:
    """Backend that 'generates' scripted answers, one character per token."""

    def __init__(self, answers: Sequence[str] = ("Paris.",), n_ctx: int = 256, delay: float = 0.0):
        self.answers = list(answers)
        self.n_ctx, self.n_threads, self.delay = n_ctx, 1, delay
        self.prompts: list[str] = []
        self.calls = 0
        self.active = 0  # generations running at once: must never exceed 1
        self.max_active = 0

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token: int) -> bytes:
        return chr(token).encode()

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        return 0

    def generate(self, tokens: Sequence[int], sampling) -> Iterator[int]:
        self.prompts.append("".join(chr(t) for t in tokens))
        answer = self.answers[self.calls % len(self.answers)]
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for c in answer:
                if self.delay:
                    time.sleep(self.delay)
                yield ord(c)
            while True:
                yield EOG
        finally:
            self.active -= 1

    def close(self) -> None:
        pass


def tiny_gguf(path, tensor: str = "token_embd.weight") -> bytes:
    """A well-formed GGUF 'llama' holding one 4x32 F32 tensor (128 parameters); no usable model."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_tensor(tensor, np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()

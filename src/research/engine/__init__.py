"""The engine: a GGUF loaded through llama-cpp-python and answers streamed with their figures.

types (Sampling, EngineConfig, Stats, the Backend protocol), engine (Engine: loading, streaming,
an answer's figures), prompt (the prompt's tokens, trimming a conversation, stop strings), signals
(the free confidence signals read while decoding), llama (llama.cpp token by token), prompts and
templates (chat formats; templates rendered in a bounded child), memory (the memory plan), options
(the range of every number a user gives), selftest (a first load in a child), provenance (what
produced an answer, run keys). The names below are the public ones.

May import: the base modules, research.qa, research.models and research.llamacpp.
"""

import importlib

#: The public names and their modules, imported when first used (PEP 562): the template worker
#: (`python -m research.engine.template_child`) starts inside this package and must not load the
#: engine, numpy and gguf first (0.3 s and 170 MB of address space it would carry under its limit).
_PUBLIC = {
    "Engine": "engine",
    "prepare": "engine",
    "StopScanner": "prompt",
    "conversation": "prompt",
    "fit_history": "prompt",
    "prompt_tokens": "prompt",
    "Backend": "types",
    "CHAT_SYSTEM": "types",
    "EngineConfig": "types",
    "Sampling": "types",
    "Stats": "types",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'research.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"research.engine.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value

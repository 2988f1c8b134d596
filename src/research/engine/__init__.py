"""The engine: a GGUF loaded through llama-cpp-python and answers streamed with their figures.

types (Sampling, EngineConfig, Stats, the Backend protocol), engine (Engine: loading, streaming,
an answer's figures), prompt (the prompt's tokens, trimming a conversation, stop strings), signals
(the free confidence signals read while decoding), llama (llama.cpp token by token), prompts and
templates (chat formats; templates rendered in a bounded child), memory (the memory plan), options
(the range of every number a user gives), selftest (a first load in a child), provenance (what
produced an answer, run keys). The names below are the public ones.

May import: the base modules, research.qa, research.models and research.llamacpp.
"""

from research.engine.engine import Engine, prepare
from research.engine.prompt import StopScanner, conversation, fit_history, prompt_tokens
from research.engine.types import Backend, EngineConfig, Sampling, Stats

__all__ = [
    "Backend",
    "Engine",
    "EngineConfig",
    "Sampling",
    "Stats",
    "StopScanner",
    "conversation",
    "fit_history",
    "prepare",
    "prompt_tokens",
]

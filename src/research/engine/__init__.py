"""The engine: a GGUF loaded through llama-cpp-python and answers streamed with their figures.

engine (Engine, Sampling, EngineConfig, Stats, the prompt and its history), llama (llama.cpp token by
token), prompts and templates (chat formats, template rendering in a bounded child), memory (the
memory plan), options (the range of every number a user gives), selftest (a first load in a child),
provenance (what produced an answer, run keys).

May import: the base modules, research.models and research.llamacpp.
"""

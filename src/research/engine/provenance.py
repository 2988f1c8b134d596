"""What produced an answer: the model file, its prompt format, the system prompt, the sampling, the
context and the llama.cpp build, fixed at the moment the answer is generated.

Evaluation records, ratings and exports carry this, and a run key derived from it, so two runs
(another model, another system prompt, another setting) are never mixed up or attributed to one
another: a rerun resumes only the records of the same key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from importlib.metadata import PackageNotFoundError, version

from research.hashing import short_key

#: The fields of a provenance that decide what a model answers; the run key hashes exactly these.
#: Thread counts and timings are recorded too, but they do not make another run.
KEYED = (
    "model_sha256",
    "prompt_format",
    "template_sha256",
    "system",
    "sampling",
    "n_ctx",
    "kv_type",
    "flash_attn",
    "llama_cpp",
)


@functools.cache
def llama_cpp_commit() -> str:
    """The llama.cpp commit the engine runs, as its own library reports it (`"0c1e570"`)."""
    import ctypes
    import os

    try:
        import llama_cpp

        lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
        lib.ggml_commit.restype = ctypes.c_char_p
        # "-dirty": llama-cpp-python builds from its sdist, whose tree differs from the tag.
        return lib.ggml_commit().decode().removesuffix("-dirty")
    except (OSError, AttributeError, ImportError):
        return "unknown"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def text_sha256(text: str) -> str:
    """`text_sha256("a")` -> "ca978112ca1bbdca..." (hex SHA-256 of the UTF-8 text)."""
    return hashlib.sha256(text.encode()).hexdigest()


def of(engine, system: str | None, sampling) -> dict:
    """The provenance of an answer `engine` gives with this system prompt and sampling, with its
    run key ("run").

    `sampling` is a research.engine.types.Sampling (or a dict of its fields).
    """
    fmt, backend = engine.format, engine.backend
    sampling = dataclasses.asdict(sampling) if dataclasses.is_dataclass(sampling) else dict(sampling)
    out = {
        "model": engine.model_id,
        "model_file": engine.ref.path.name if getattr(engine, "ref", None) else engine.model_id,
        "model_sha256": engine.sha256,
        "prompt_format": fmt.name,
        "template_sha256": text_sha256(fmt.template) if fmt.template else None,
        "system": system or "",
        "sampling": sampling,
        "n_ctx": backend.n_ctx,
        "kv_type": backend.kv_type,
        "flash_attn": backend.flash_attn,
        "n_threads": backend.n_threads,
        "llama_cpp": llama_cpp_commit(),
        "llama_cpp_python": package_version("llama-cpp-python"),
        # The engine's build: its CPU flags and compiled features, and whether llama.cpp's extra
        # weight layouts were on (research.engine.selftest). Recorded, not keyed, like the threads.
        "engine_build": engine_build(backend),
    }
    return out | {"run": run_key(out)}


def engine_build(backend) -> dict | None:
    """The engine build behind `backend` (None for a backend that is not llama.cpp's)."""
    from research.engine.llama import LlamaBackend

    if not isinstance(backend, LlamaBackend):
        return None
    from research.engine import selftest

    return selftest.provenance() | {"extra_bufts": backend.extra_bufts}


def run_key(provenance: dict) -> str:
    """A short key of the fields that decide the answers: equal keys, comparable answers.

    `run_key(p)` -> "3f2a9c0d1e4b5a6f" (16 hex digits of a SHA-256 over the KEYED fields).
    """
    keyed = {k: provenance.get(k) for k in KEYED}
    return short_key(keyed)


def describe(provenance: dict) -> str:
    """One line naming a run: `"smollm2-135m-q4_1 · chatml · t=0 · ctx 1024 · system 'Answer…'"`."""
    s = provenance.get("sampling") or {}
    temp = s.get("temperature")
    system = provenance.get("system") or ""
    short = system if len(system) <= 40 else system[:39] + "…"
    return (
        f"{provenance.get('model')} · {provenance.get('prompt_format')} · t={temp:g} · "
        f"ctx {provenance.get('n_ctx')} · system {short!r}"
        if isinstance(temp, (int, float))
        else f"{provenance.get('model')} · {provenance.get('prompt_format')}"
    )

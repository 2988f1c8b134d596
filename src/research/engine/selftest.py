"""A self-test before the first answer: a model's first load on an engine build runs in a child.

An engine compiled for another CPU, or with llama.cpp's AMX kernels on an Intel CPU that has AMX
(llama.cpp issue 20824), kills the process with a signal at its first matrix product: `research
chat` exits 139 with nothing printed, and the page dies with every session on it. So before a
model is loaded for answers, a child process (`python -m research.engine.selftest`) does the work of a
short answer with the real settings (threads, batch, flash attention, KV type, file mapping): it
loads the model, evaluates a prompt of a few dozen tokens in one batch and decodes a few tokens
after it, within a time bound. If the child dies by a signal:

- the test is tried again with llama.cpp's extra weight layouts off (its AMX kernels and the
  repacked forms, `use_extra_bufts`), and if that works the model is loaded so, with a warning
  that names the fix: slower, never a crash;
- otherwise the user gets one line naming the CPU, the feature the engine holds that this CPU
  cannot run, and the fix (`make install`); the child leaves no core dump.

The verdict is kept in `<cache>/selftest.json`, keyed by the engine build (the SHA-256 of its CPU
library), this CPU's flags, the model's weight types and the settings that choose kernels, so the
test costs one child load per new combination (about a second for the bundled model). A file the
kit cannot vouch for is tried in a child at every load anyway (research.models.vouched), and for it that
trial is this test.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from research import child, device
from research.errors import KitError
from research.hashing import short_key
from research.llamacpp import flags as engine_build
from research.paths import cache_dir

#: Seconds the child may take before the file or the engine counts as stuck: a 4 GB file loads in far less.
TIMEOUT_S = 600
#: Tokens the child decodes after its prompt: enough to run the one-token kernels several times.
DECODE_TOKENS = 4
#: Prompt words, evaluated in one batch (the batched matrix kernels, where AMX and repacking run).
PROMPT = (
    "The self-test asks a short question about the weather in Paris, the tallest mountain in Europe, "
    "the author of a famous novel, and the boiling point of water at sea level."
)
CACHE_NAME = "selftest.json"
CACHE_VERSION = 1
MAX_ENTRIES = 256


@dataclasses.dataclass(frozen=True)
class Verdict:
    """How a model may be loaded on this engine and CPU."""

    extra_bufts: bool = True  # False: llama.cpp's extra weight layouts crashed here, so they stay off
    warning: str | None = None  # a line for the user when the load falls back
    tested: bool = False  # a child ran now (False: the verdict came from the cache)


@functools.cache
def engine() -> dict:
    """What the engine in this process is: its CPU library's SHA-256, the features llama.cpp was
    compiled with, and the kit's build record of it (None when built outside the kit)."""
    lib_dir = engine_build.engine_lib_dir()
    lib = engine_build.cpu_library(lib_dir) if lib_dir else None
    if lib is None:
        raise KitError("llama-cpp-python is not installed or has no CPU library; run: make install")
    from research.hashing import cached_sha256

    sha = cached_sha256(lib)
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    compiled = engine_build.system_info_features(info)
    record = engine_build.find_record(sha)
    return {
        "cpu_library": str(lib),
        "cpu_library_sha256": sha,
        "compiled_features": compiled,
        "cmake_args": record["cmake_args"] if record else None,
        "built_by": "research.llamacpp.flags" if record else "unknown (not built by the kit)",
        "key": record["key"] if record else None,
    }


def provenance() -> dict:
    """The engine build as records and `chat --json` name it: flags, compiled features, library hash."""
    e = engine()
    return {
        "cmake_args": e["cmake_args"],
        "compiled_features": e["compiled_features"],
        "cpu_library_sha256": e["cpu_library_sha256"][:16],
        "built_by": e["built_by"],
    }


def test_key(info, config) -> str:
    """What decides whether a load can crash here: engine, CPU, weight types, kernel settings."""
    what = {
        "engine": engine()["cpu_library_sha256"],
        "cpu": sorted(engine_build.cpu_flags()),
        "machine": os.uname().machine if hasattr(os, "uname") else "",
        "weights": sorted({t.type_name for t in info.tensors}),
        "n_threads": config.n_threads or device.default_threads(),
        "n_ubatch": config.n_ubatch,
        "flash_attn": config.flash_attn,
        "kv_type": config.kv_type,
        "mapped": config.use_mmap is not False,
    }
    return short_key(what, 20)


def cache_file() -> Path:
    return cache_dir() / CACHE_NAME


def _load_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def cached(key: str) -> Verdict | None:
    entry = _load_cache().get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("extra_bufts"), bool):
        return None
    warning = entry.get("warning")
    return Verdict(entry["extra_bufts"], warning if isinstance(warning, str) else None)


def _remember(key: str, verdict: Verdict, model: str) -> None:
    """Keep a verdict; a cache that cannot be written only means testing again next time."""
    entries = _load_cache()
    entries[key] = {
        "extra_bufts": verdict.extra_bufts,
        "warning": verdict.warning,
        "model": model,
        "at": time.time(),
    }
    newest = sorted(entries.items(), key=lambda kv: kv[1].get("at", 0) if isinstance(kv[1], dict) else 0)
    entries = dict(newest[-MAX_ENTRIES:])
    try:
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".selftest-")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def child_command(path, config, extra_bufts: bool) -> list[str]:
    settings = {
        "n_ctx": min(config.n_ctx, 512),  # the KV cache's size chooses no kernel
        "n_threads": config.n_threads,
        "n_batch": config.n_batch,
        "n_ubatch": config.n_ubatch,
        "use_mmap": config.use_mmap,
        "flash_attn": config.flash_attn,
        "kv_type": config.kv_type,
        "extra_bufts": extra_bufts,
    }
    return child.python_module("research.engine.selftest", path, json.dumps(settings))


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def crash_line(name: str, returncode: int, trusted: bool) -> str:
    """One line for a self-test that died by a signal: the CPU, what the engine holds that this CPU
    cannot run, and the fix."""
    sig = _signal_name(returncode)
    e = engine()
    cpu = device.cpu_info()
    bad = engine_build.unsafe_features(e["compiled_features"], engine_build.cpu_flags())
    fix = "rebuild the engine for this CPU: make install (python -m research doctor tells more)"
    if bad:
        return (
            f"llama.cpp crashed ({sig}) on its first tokens of {name}: this engine build holds "
            f"{', '.join(bad)}, which this CPU ({cpu}) cannot run safely; {fix}"
        )
    if sig == "SIGILL":
        return (
            f"llama.cpp crashed (SIGILL) on its first tokens of {name}: the engine uses an instruction "
            f"this CPU ({cpu}) lacks, so it was built on another machine; {fix}"
        )
    if trusted:
        return (
            f"llama.cpp crashed ({sig}) on its first tokens of {name}, a file the kit vouches for, on "
            f"this CPU ({cpu}; engine: {' '.join(e['compiled_features'])}): the engine build is the likely "
            f"cause; {fix}"
        )
    return (
        f"trying {name} crashed ({sig}) in llama.cpp: the file is damaged or hostile; it was tried in a "
        "separate process, so nothing else was affected (if every model crashes: python -m research doctor)"
    )


def _run(cmd: list[str], name: str, trusted: bool, timeout: float) -> int:
    """Run one trial; its return code (negative: a signal). KitError for a timeout or a refusal."""
    hint = "; the file may be hostile" if not trusted else "; the engine may be stuck on this CPU"
    r = child.run(cmd, f"trying {name}", timeout=timeout, timeout_hint=hint, check=False)
    if r.returncode < 0:
        return r.returncode
    if r.returncode != 0:
        raise child.failure(f"trying {name}", r.returncode, r.stderr)
    return 0


def ensure(
    path, info, config, trusted: bool, timeout: float = TIMEOUT_S, command=None, force: bool = False
) -> Verdict:
    """Test a load of `path` with `config` in a child unless this engine, CPU and kind of model
    passed before (a file the kit cannot vouch for is tried every time, and `force` tests again);
    the verdict to load with.

    `command(path, config, extra_bufts)` replaces the child's command (tests make it crash).
    """
    name = Path(path).name
    key = test_key(info, config)
    known = None if force else cached(key)
    if known is not None and trusted:
        return known
    command = command or child_command
    extra = known.extra_bufts if known is not None else True
    code = _run(command(path, config, extra), name, trusted, timeout)
    verdict = Verdict(extra, known.warning if known else None, tested=True)
    if code < 0 and extra:
        first = _signal_name(code)
        if _run(command(path, config, False), name, trusted, timeout) == 0:
            holds = [f for f in engine()["compiled_features"] if f in ("AMX_INT8", "REPACK")]
            verdict = Verdict(
                False,
                f"llama.cpp crashed ({first}) on this CPU with its extra weight layouts "
                f"({', '.join(holds) or 'use_extra_bufts'}) and answers without them, slower; rebuild the "
                "engine for this CPU: make install",
                tested=True,
            )
            code = 0
    if code < 0:
        raise KitError(crash_line(name, code, trusted))
    _remember(key, verdict, name)
    return verdict


def _child(argv: list[str]) -> None:
    """The child: load as the engine will, evaluate a prompt in one batch, decode a few tokens."""
    import resource

    try:  # a crash here is expected to be possible: it must not leave a core file behind
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    from research.engine.llama import LlamaBackend
    from research.engine.types import EngineConfig, Sampling

    path, raw = argv
    settings = json.loads(raw)
    extra = settings.pop("extra_bufts")
    config = EngineConfig(**settings)
    backend = LlamaBackend(path, config, extra_bufts=extra)
    tokens = backend.tokenize(PROMPT)[: max(8, config.n_ctx // 2)]
    steps = backend.generate(tokens, Sampling(temperature=0, max_tokens=DECODE_TOKENS))
    for i, _ in enumerate(steps):
        if i + 1 >= DECODE_TOKENS:
            break
    steps.close()
    backend.close()


if __name__ == "__main__":
    child.child_main(_child)

"""The engine's decode step in C (step.c), compiled on this device against the installed llama.cpp.

A chat answer decodes one token at a time; between two llama_decode calls llama.cpp's threads
wait while the kit samples the next token and reads its confidence signals. From Python that
took three calls and NumPy passes over the vocabulary (0.36 ms a token on SmolLM2, more on
larger vocabularies) and the next decode ran slower after the wait. step.c does the same work in
one call (same sampler chain, same tokens: see its header).

It is compiled the first time it is needed, with the C compiler that built llama.cpp (`$CC`, else
`cc`), against llama-cpp-python's own llama.h and the libllama it loaded, for this CPU, into a
private folder of the cache keyed by all of these; any failure (no compiler, no header, another
ABI, a folder someone else could write) leaves the engine on its Python loop, which gives the
same tokens, and `why()` says why. RESEARCH_NATIVE_STEP=0 keeps the Python loop (to compare).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from research import paths
from research.errors import KitError

SOURCE = Path(__file__).with_name("step.c")
#: Flags that let the compiler vectorize step.c's passes over the vocabulary: sums reassociated,
#: logits taken as finite numbers (llama.cpp's are; step.c hands the chain every token when none
#: passes its floor).
FLAGS = [
    "-O3",
    "-fPIC",
    "-shared",
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-ffinite-math-only",
]

_loaded: dict[str, object] = {}
_why = {"reason": ""}


def why() -> str:
    """Why the engine decodes with its Python loop ("" when the C step is in use or not yet tried)."""
    return _why["reason"]


def step():
    """kit_steps from step.c as a ctypes function, or None (see why())."""
    if os.environ.get("RESEARCH_NATIVE_STEP", "1") == "0":
        _why["reason"] = "RESEARCH_NATIVE_STEP=0"
        return None
    if "step" in _loaded:
        return _loaded["step"]
    try:
        lib = _load(_build())
    except (OSError, subprocess.SubprocessError, _Unavailable) as e:
        _loaded["step"] = None  # for this process: a later one tries again
        _why["reason"] = str(e) or type(e).__name__
        return None
    fn = lib.kit_steps  # step.c's kit_steps: several of its kit_step a call
    fn.argtypes = [
        ctypes.c_void_p,  # llama_context *
        ctypes.c_void_p,  # llama_sampler * (the chain)
        ctypes.c_int32,  # token to decode
        ctypes.c_int32,  # n_vocab
        ctypes.c_int32,  # keep: the chain's first top-k (0: every token)
        ctypes.c_int32,  # want_signals
        ctypes.POINTER(ctypes.c_double),  # out[6]
        ctypes.c_void_p,  # llama_token_data[n_vocab]: the candidates' room (candidates())
        ctypes.c_int32,  # n_steps
        ctypes.c_int32,  # stop_at_eog
        ctypes.c_void_p,  # int32_t tokens_out[n_steps]
        ctypes.c_void_p,  # double signals_out[2 * n_steps]
    ]
    fn.restype = ctypes.c_int32
    _loaded["step"] = fn
    _why["reason"] = ""
    return fn


def candidates(n_vocab: int):
    """Room for step.c's candidates: llama_token_data (id, logit, p) for a whole vocabulary."""
    import llama_cpp

    return (llama_cpp.llama_token_data * n_vocab)()


class _Unavailable(Exception):
    pass


def _cpu() -> str:
    """What the build is tuned for (-march=native): the machine and its CPU's feature flags, so that
    a cache shared between machines (a home folder on NFS) never hands one CPU another's code."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return f"{platform.machine()}:{line}"
    except OSError:
        pass
    return f"{platform.machine()}:{platform.processor()}"


def _private(folder: Path) -> None:
    """_Unavailable unless `folder` and every folder above it are this user's (or root's) and no one
    else may write in them (a shared folder with the sticky bit, such as /tmp, is fine above)."""
    me = os.getuid()
    for p in (folder, *folder.parents):
        st = p.stat()
        shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid not in (me, 0) or (shared and (p == folder or not st.st_mode & stat.S_ISVTX)):
            raise _Unavailable(f"{p} is not this user's alone: the engine will not run code built in it")


def _load(path: Path):
    """CDLL of the built step, opened without following links and checked as opened (its owner and
    mode), then loaded through the open file, so that it cannot be swapped between check and load."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _Unavailable(f"{path} is not this user's alone: the engine will not load it")
        proc = f"/proc/self/fd/{fd}"
        return ctypes.CDLL(proc if os.path.exists(proc) else str(path))
    finally:
        os.close(fd)


def _build() -> Path:
    import llama_cpp.llama_cpp as low_level

    lib = Path(getattr(low_level._lib, "_name", "") or "")
    header = Path(low_level.__file__).resolve().parents[1] / "include" / "llama.h"
    if not lib.is_file():
        raise _Unavailable(f"the loaded libllama was not found ({lib})")
    if not header.is_file():
        raise _Unavailable(f"llama-cpp-python's llama.h was not found ({header})")
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    cc = shlex.split(found) if found else []  # CC="ccache gcc" is two words
    if not cc:
        raise _Unavailable("no C compiler (cc, gcc or clang) to build the engine's C step")
    st = lib.stat()
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        header.read_bytes(),
        f"{lib}:{st.st_size}:{st.st_mtime_ns}",
        _cpu(),
        *cc,
        *FLAGS,
    ):
        key.update(part if isinstance(part, bytes) else part.encode())
    folder = paths.private_dir(paths.cache_dir() / "native" / key.hexdigest()[:16])
    _private(folder)
    target = folder / "libkitstep.so"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        built = Path(tmp) / "libkitstep.so"
        base = [
            *cc,
            *FLAGS,
            f"-I{header.parent}",
            str(SOURCE),
            "-o",
            str(built),
            str(lib),
            f"-Wl,-rpath,{lib.parent}",
        ]
        # Tuned for this CPU (the step runs where it is built; the key holds the CPU's flags); a
        # compiler that refuses the flag (a cross or an old one) builds for the baseline instead.
        for cmd in ([*cc, "-march=native", *base[len(cc) :]], base):
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if run.returncode == 0:
                break
        else:
            said = (run.stderr or run.stdout).strip().splitlines()
            name = Path(cc[0]).name
            raise _Unavailable(f"{name} could not build step.c: {said[-1] if said else run.returncode}")
        os.chmod(built, 0o500)  # whatever the umask: only this user may replace or change it
        os.replace(built, target)
    return target


#: Tokens decoded a call of step.c's kit_steps: the engine's Python (detokenizing, stop strings, the
#: reader) then runs once for them rather than between every two decodes, while llama.cpp's threads
#: wait. A call ends early after an end-of-generation token, and takes one token at a time past
#: `max_tokens`, so that an answer never decodes beyond either; a stop string or a cancel found in
#: a batch leaves at most this many tokens decoded beyond it in the KV cache (the backend's
#: cached_prefix drops them at the next question).
STEPS_A_CALL = 8


def decode_loop(
    backend, llm, step, sampler, keep: int, token: int, signals: bool, sampling, room
) -> Iterator[int]:
    """research.engine.llama.LlamaBackend's decode loop through step.c, from the first sampled
    `token` on, as its Python loop (the same tokens, until the context is full): one C call
    decodes, samples and reads the free signals of up to STEPS_A_CALL tokens. `room`: candidates()
    of the model's vocabulary."""
    import numpy as np

    out = (ctypes.c_double * 6)()
    got = np.zeros(STEPS_A_CALL, dtype=np.int32)
    sig = np.zeros(2 * STEPS_A_CALL, dtype=np.float64)
    ctx, chain, n_ctx, trace = llm._ctx.ctx, sampler.sampler, backend.n_ctx, backend.trace
    fixed = (len(room), keep, signals, out, ctypes.addressof(room))
    left = sampling.max_tokens - 1  # the first token came with the prompt's evaluation
    try:
        yield token
        while llm.n_tokens < n_ctx:
            n = max(1, min(STEPS_A_CALL, left, n_ctx - llm.n_tokens))
            done = step(ctx, chain, token, *fixed, n, 1, got.ctypes.data, sig.ctypes.data)
            if done == -1:
                raise KitError("llama.cpp could not evaluate the next token (llama_decode failed)")
            if done < 0:
                raise KitError("llama.cpp kept no logits to sample from, or its sampler chose none")
            # The KV cache now holds `token` and all the sampled but the last: what cached_prefix
            # compares the next prompt with.
            llm.input_ids[llm.n_tokens : llm.n_tokens + done] = [token, *got[: done - 1].tolist()]
            llm.n_tokens += done
            left -= done
            if signals:
                trace.extend(zip(sig[0 : 2 * done : 2].tolist(), sig[1 : 2 * done : 2].tolist(), strict=True))
            for token in got[:done].tolist():  # noqa: B007 (the last one is decoded next)
                yield token
    finally:
        backend.decode_s, backend.sample_s = out[2], out[3]
        backend.signal_s += out[4]

"""What a llama.cpp build does, for notebook 01: every CMake flag of the kit's builds explained,
the phone detected, and one answer from llama-cli with the speed line it prints.

research.llamacpp.build decides the flags; this module only says why each one is there, so a reader of
the notebook (or of a build record) can tell what would change without it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from research.llamacpp import build

#: Why each flag of research.llamacpp.build.cmake_flags is there, by flag name (the part before "=").
FLAG_NOTES = {
    "CMAKE_BUILD_TYPE": "optimised code (-O3) without debug checks; a Debug build is several times slower",
    "BUILD_SHARED_LIBS": "OFF: link statically, one self-contained file per tool, easy to copy to a phone",
    "LLAMA_BUILD_TESTS": "OFF: skip llama.cpp's own test programs, fewer build steps",
    "LLAMA_OPENSSL": "OFF: no HTTPS client in the tools: nothing here downloads, and no libssl is needed",
    "LLAMA_USE_PREBUILT_UI": "OFF: otherwise configuring llama-server downloads its web page",
    "LLAMA_BUILD_UI": "OFF: do not build the web page either (it needs npm)",
    "LLAMA_BUILD_COMMIT": "the commit the tools report (llama-bench's build_commit): an sdist has no git",
    "GGML_NATIVE": "ON: compile for the CPU it runs on (-march=native: NEON and dotprod on a phone); OFF: "
    "for the features named one by one (x86: this CPU's, without AMX) or by GGML_CPU_ARM_ARCH",
    "GGML_SSE42": "x86 vector feature of this CPU, named one by one, not -march=native (ON if it has it)",
    "GGML_AVX": "x86 vector feature of this CPU (ON if it has it)",
    "GGML_AVX2": "x86 vector feature of this CPU (ON if it has it): the quantized dot products' main path",
    "GGML_FMA": "x86 fused multiply-add (ON if this CPU has it)",
    "GGML_F16C": "x86 half-precision conversion (ON if this CPU has it)",
    "GGML_BMI2": "x86 bit manipulation (ON if this CPU has it)",
    "GGML_AVX_VNNI": "x86 int8 dot products in 256-bit registers (ON if this CPU has it)",
    "GGML_AVX512": "x86 512-bit vectors, F/CD/VL/DQ/BW (ON if this CPU has all five)",
    "GGML_AVX512_VBMI": "AVX-512 byte permutes (ON if this CPU has it)",
    "GGML_AVX512_VNNI": "AVX-512 int8 dot products (ON if this CPU has it)",
    "GGML_AVX512_BF16": "AVX-512 bfloat16 (ON if this CPU has it)",
    "GGML_AMX_TILE": "OFF always: llama.cpp's AMX kernels crash on Intel CPUs (llama.cpp issue 20824)",
    "GGML_AMX_INT8": "OFF always: llama.cpp's AMX kernels crash on Intel CPUs (llama.cpp issue 20824)",
    "GGML_AMX_BF16": "OFF always: llama.cpp's AMX kernels crash on Intel CPUs (llama.cpp issue 20824)",
    "GGML_OPENMP": "OFF: ggml's own thread pool instead of OpenMP; Termux's clang has no libomp at run time "
    "(llama.cpp issue 11979) and the NDK cannot install it",
    "GGML_LLAMAFILE": "OFF: llamafile's matrix kernels do not support Android (llama.cpp docs/android.md)",
    "GGML_CPU_ARM_ARCH": "the ARM features to compile for: armv8.2-a with dot product (sdot, int8 matrix "
    "products) and fp16 arithmetic, as the Galaxy S21's Cortex-X1/A78/A55 have",
    "CMAKE_TOOLCHAIN_FILE": "the NDK's toolchain: Android's clang and system libraries",
    "ANDROID_ABI": "arm64-v8a: 64-bit ARM, every current phone",
    "ANDROID_PLATFORM": "android-28: the oldest Android (9) the tools will start on",
    "CMAKE_SYSTEM_NAME": "cross-compiling: the binaries are for another system than the one building them",
    "CMAKE_SYSTEM_PROCESSOR": "aarch64: 64-bit ARM",
    "CMAKE_C_COMPILER": "the cross compiler for C",
    "CMAKE_CXX_COMPILER": "the cross compiler for C++",
    "CMAKE_EXE_LINKER_FLAGS": "-static: no ARM system libraries needed, so qemu-aarch64 runs it on this PC",
}


def explain(flags: list[str]) -> list[tuple[str, str]]:
    """(flag, why) for each CMake flag: `explain(["-DGGML_OPENMP=OFF"])` -> [("-DGGML_OPENMP=OFF",
    "OFF: ggml's own thread pool ...")]; a flag the kit never sets gets "(not explained here)"."""
    out = []
    for flag in flags:
        name = flag.removeprefix("-D").split("=", 1)[0]
        out.append((flag, FLAG_NOTES.get(name, "(not explained here)")))
    return out


def on_termux() -> bool:
    """True inside Termux on Android (its shell sets TERMUX_VERSION; its prefix is com.termux's)."""
    return "TERMUX_VERSION" in os.environ or "com.termux" in os.environ.get("PREFIX", "")


def build_kind(kind: str | None) -> str:
    """The build kind to use: as given, else "termux" inside Termux and "native" elsewhere."""
    return kind or ("termux" if on_termux() else "native")


_SPEED = re.compile(r"\[ Prompt: ([\d.]+) t/s \| Generation: ([\d.]+) t/s \]")


def cli_run(
    question: str, model=None, n_predict: int = 32, kind: str = "native", threads: int | None = None
) -> dict:
    """One greedy answer from the built llama-cli with the speed line it prints at the end.

    Returns {"command", "answer", "speed_line", "prompt_tps", "decode_tps"}: the speeds are
    llama-cli's own (prompt evaluation and generation tokens/s of this one answer).
    """
    cmd, printed = build.cli_run(question, model, n_predict, kind, threads=threads)
    speed = _SPEED.search(printed)
    shown = shlex.join(["llama-cli", "-m", Path(cmd[2]).name, *cmd[3:]])
    return {
        "command": shown,
        "answer": build.cli_answer_of(printed, question) or printed.strip()[-400:],
        "speed_line": speed.group(0) if speed else "(no speed line printed)",
        "prompt_tps": float(speed.group(1)) if speed else None,
        "decode_tps": float(speed.group(2)) if speed else None,
    }


def have(*programs: str) -> dict[str, bool]:
    """Which of `programs` are on PATH: `have("cmake", "adb")` -> {"cmake": True, "adb": False}."""
    return {p: shutil.which(p) is not None for p in programs}

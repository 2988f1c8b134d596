"""Builds of llama.cpp that are safe on the CPU in hand: the flags, and the engine installed with them.

llama.cpp compiles by default for everything the build machine's compiler sees (GGML_NATIVE,
`-march=native`). On Intel CPUs with AMX (Sapphire Rapids and later, and cloud VMs on them) that
includes llama.cpp's AMX kernels, and these crash the process in `ggml_backend_amx_mul_mat`
(SIGSEGV at `ldtilecfg`; llama.cpp issue 20824: the tile permission is asked for on one thread
only, and the tile configuration on the stack can be optimised away). So on x86 the kit names
each vector feature this CPU has (SSE4.2, AVX, AVX2, FMA, F16C, BMI2, AVX-VNNI, AVX-512 and its
VBMI, VNNI and BF16 parts) and leaves AMX out; on ARM and elsewhere the native build stands. The
same flags serve the engine (llama-cpp-python's libraries) and the kit's own llama.cpp tools
(research.llamacpp.build).

pip caches a wheel it built by the package's version, not by CMAKE_ARGS, so a wheel built with
other flags (a crashing one) would come back on the next install. The engine is therefore built
here into a cache of the kit's own, one folder per version, flags, machine and compiler
(`<cache>/engine/<key>/`), with pip's cache off, and installed from there; a record beside the
wheel names the flags, the features llama.cpp reports it was compiled with, and the SHA-256 of
its CPU library, by which the kit knows the engine it runs (research.engine.selftest, `research doctor`).

Run by `make install` before the kit itself, with the standard library alone (the kit's
dependencies are not installed yet):

    PYTHONPATH=src .venv/bin/python -m research.llamacpp.flags install [--target phone]
    PYTHONPATH=src .venv/bin/python -m research.llamacpp.flags flags      # the flags, one per line
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from research.errors import KitError
from research.hashing import short_key
from research.paths import REPO_ROOT, cache_dir

ENGINE = "llama-cpp-python"

#: x86 features llama.cpp can compile for: (its CMake option, the /proc/cpuinfo flags it needs).
X86_FEATURES = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)
#: Never compiled in, whatever the CPU: llama.cpp's AMX path (issue 20824).
NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
#: Galaxy S21 class (Snapdragon 888 / Exynos 2100, Cortex-X1/A78/A55): ARMv8.2-A with the
#: dot-product and half-precision extensions that llama.cpp's ARM kernels use.
PHONE_ARCH = "armv8.2-a+dotprod+fp16"
TARGETS = ("native", "phone")
X86 = ("x86_64", "amd64", "i386", "i686")

#: What llama.cpp's system info calls each compiled-in x86 feature, and the CPU flag it needs.
SYSTEM_INFO_NEEDS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Every flag the CPU advertises (x86 `flags`, ARM `Features`), from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo, re.M)
    return set(m.group(1).split()) if m else set()


def cmake_args(
    target: str = "native", flags: set[str] | None = None, machine: str | None = None
) -> list[str]:
    """The CPU flags of a llama.cpp build for `target` on this machine.

    `cmake_args("native", {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "amx_int8"}, "x86_64")`
    -> ["-DGGML_NATIVE=OFF", "-DGGML_SSE42=ON", ..., "-DGGML_AVX512=OFF", ..., "-DGGML_AMX_INT8=OFF", ...]
    "phone": the Galaxy S21-class ARM features, for the arm64 rehearsal (only on an ARM machine).
    """
    machine = (machine or platform.machine()).lower()
    if target not in TARGETS:
        raise KitError(f"unknown build target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "phone":
        if machine not in ("aarch64", "arm64"):
            raise KitError(f"the phone's flags are for an arm64 machine; this one is {machine}")
        return ["-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={PHONE_ARCH}"]
    if machine not in X86:
        return ["-DGGML_NATIVE=ON"]  # ARM and the rest: no AMX, and the compiler's probe is right
    flags = cpu_flags() if flags is None else flags
    out = ["-DGGML_NATIVE=OFF"]
    for option, needs in X86_FEATURES:
        out.append(f"-D{option}={'ON' if all(f in flags for f in needs) else 'OFF'}")
    return out + [f"-D{option}=OFF" for option in NEVER]


def system_info_features(text: str) -> list[str]:
    """The CPU features llama.cpp says it was compiled with, from llama_print_system_info():
    `"CPU : SSE3 = 1 | AVX2 = 1 | REPACK = 1 |"` -> ["SSE3", "AVX2", "REPACK"]."""
    return [name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", text) if value != "0"]


def unsafe_features(compiled: list[str], flags: set[str], machine: str | None = None) -> list[str]:
    """What in an engine compiled with `compiled` (system-info names) cannot run here: features
    this CPU lacks, and AMX on any x86 CPU (issue 20824). `unsafe_features(["AVX2", "AMX_INT8"],
    {"avx2", "amx_int8"}, "x86_64")` -> ["AMX_INT8 (llama.cpp issue 20824)"]."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return []
    out = []
    for name in compiled:
        need = SYSTEM_INFO_NEEDS.get(name)
        if need is None:
            continue
        if need not in flags:
            out.append(f"{name} (this CPU lacks it)")
        elif name == "AMX_INT8":
            out.append("AMX_INT8 (llama.cpp issue 20824)")
    return out


def engine_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The llama-cpp-python version the kit pins (`"0.3.36"`): from pyproject.toml in a checkout,
    else from the kit's installed metadata."""
    if pyproject.is_file():
        m = re.search(r'"llama-cpp-python==([^"]+)"', pyproject.read_text())
        if not m:
            raise KitError(f"{pyproject} pins no llama-cpp-python version (llama-cpp-python==X)")
        return m.group(1)
    from importlib.metadata import PackageNotFoundError, requires

    try:
        pins = [r for r in requires("research") or [] if r.replace(" ", "").startswith("llama-cpp-python==")]
    except PackageNotFoundError:
        pins = []
    if not pins:
        raise KitError("the kit's llama-cpp-python version is unknown: run this from the kit's checkout")
    return pins[0].split("==", 1)[1].split(";")[0].strip()


def compiler_id() -> str:
    """The first line of the C compiler's --version (what CMake will pick: $CC, else cc)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return "none"
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return cc
    return (r.stdout.splitlines() or [cc])[0].strip()


def engine_key(version: str, args: list[str], machine: str, compiler: str) -> str:
    """A short key of what decides the engine's binary: equal keys, interchangeable wheels."""
    what = {"version": version, "cmake_args": args, "machine": machine, "compiler": compiler}
    return short_key(what, 12)


def engine_root() -> Path:
    """The kit's own wheels of the engine: `<cache>/engine`, one folder per key."""
    return cache_dir() / "engine"


def sdist_dir() -> Path:
    """Where llama-cpp-python's source archive is kept: shared with research.llamacpp.build's tools."""
    default = Path.home() / ".cache" / "research" / "llama.cpp"
    return Path(os.environ.get("RESEARCH_BUILD_DIR", default)).expanduser() / "sdist"


def engine_lib_dir(python: str | None = None) -> Path | None:
    """The folder of the installed llama_cpp's libraries (of this interpreter, or of `python`)."""
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.origin:
            return None
        return Path(spec.origin).parent / "lib"
    code = "import importlib.util as u; s = u.find_spec('llama_cpp'); print(s.origin if s else '')"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return Path(r.stdout.strip()).parent / "lib" if r.returncode == 0 and r.stdout.strip() else None


def cpu_library(lib_dir: Path) -> Path | None:
    """llama.cpp's CPU backend library in `lib_dir` (where the vector kernels live)."""
    for name in ("libggml-cpu.so", "libggml-cpu.dylib", "ggml-cpu.dll"):
        if (lib_dir / name).is_file():
            return lib_dir / name
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def find_record(lib_sha256: str) -> dict | None:
    """The kit's record of the engine whose CPU library has this SHA-256, or None (an engine
    built outside the kit: pip's own build, a cached wheel, a conda package)."""
    root = engine_root()
    if not root.is_dir():
        return None
    for path in sorted(root.glob("*/record.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("cpu_library_sha256") == lib_sha256:
            return record
    return None


def _system_info(python: str, lib_dir: Path) -> str:
    """What llama.cpp says it was compiled with, from its own library in a child process (through
    ctypes: llama_cpp's Python side needs NumPy, which may not be installed yet)."""
    code = (
        "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
        "lib.llama_print_system_info.restype = ctypes.c_char_p; "
        "sys.stdout.write(lib.llama_print_system_info().decode())"
    )
    names = ("libllama.so", "libllama.dylib", "llama.dll")
    lib = next((lib_dir / n for n in names if (lib_dir / n).is_file()), lib_dir / names[0])
    r = subprocess.run(
        [python, "-c", code, str(lib)], capture_output=True, text=True, errors="replace", timeout=120
    )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise KitError(f"the installed engine's library {lib} does not load ({last})")
    return r.stdout


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _pip(python: str, *args: str, env=None, log=None) -> int:
    """Run pip; its output into `log` (compile steps shown one in ten), or shown when no log."""
    cmd = [python, "-m", "pip", *args]
    if log is None:
        return subprocess.run(cmd, env=env).returncode
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
    ) as p:
        for line in p.stdout:
            log.write(line)
            m = re.search(r"\[(\d+)/(\d+)\]", line)
            if m and (int(m[1]) % 10 == 0 or m[1] == m[2]):
                _say(f"  compiling llama.cpp: step {m[1]}/{m[2]}")
        return p.wait()


def _sdist(python: str, version: str, log) -> Path:
    """llama-cpp-python's source archive, fetched once into sdist_dir() (the tools' build uses it too)."""
    folder = sdist_dir()
    tarball = folder / f"llama_cpp_python-{version}.tar.gz"
    if tarball.is_file():
        return tarball
    folder.mkdir(parents=True, exist_ok=True)
    _say(f"Fetching the {ENGINE} {version} source (~80 MB, once) ...")
    args = ("download", "--no-deps", "--no-binary", ":all:", f"{ENGINE}=={version}", "-d", str(folder))
    if _pip(python, *args, log=log) != 0 or not tarball.is_file():
        raise KitError(f"could not fetch the {ENGINE} {version} source with pip; see {log.name}")
    return tarball


def build_wheel(python: str, version: str, args: list[str], folder: Path) -> Path:
    """Compile the engine into a wheel in `folder` with `args`, pip's cache off; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "build.log"
    with open(log_path, "w") as log:
        source = _sdist(python, version, log)
        flags = " ".join(args)
        _say(f"Compiling llama.cpp inside {ENGINE} {version} ({flags}): about five minutes on two cores.")
        env = dict(os.environ, CMAKE_ARGS=" ".join(args), FORCE_CMAKE="1")
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            pip_args = ("wheel", "-v", "--no-deps", "--no-cache-dir", "-w", tmp, str(source))
            if _pip(python, *pip_args, env=env, log=log) != 0:
                log.flush()
                tail = log_path.read_text(errors="replace").splitlines()[-30:]
                _say("\n".join(tail))
                raise KitError(f"the engine did not build (last lines above); full log: {log_path}")
            (wheel,) = Path(tmp).glob("*.whl")
            final = folder / wheel.name
            os.replace(wheel, final)
    return final


def plan_install(record: dict | None, installed_sha256: str | None, wheels: list, rebuild: bool) -> str:
    """What the install does: "keep" the installed engine when its CPU library is the one this
    key's record names (never trusting the version, which a stale build shares), "install" this
    key's cached wheel, or "build" one first."""
    if rebuild:
        return "build"
    if record and installed_sha256 and installed_sha256 == record.get("cpu_library_sha256"):
        return "keep"
    return "install" if wheels else "build"


def install(
    target: str = "native", python: str | None = None, rebuild: bool = False, wheel: Path | None = None
) -> dict:
    """Make the interpreter `python` run an engine built with the safe flags for this CPU.

    Nothing is done when the installed engine is the one of this key; a wheel of this key in the
    kit's cache is installed as it is; otherwise one is compiled first. `wheel`: a wheel built
    elsewhere with `target`'s flags (the ARM rehearsal cross-compiles one), installed and recorded
    under a key of its own content. Returns the record.
    """
    python = python or sys.executable
    version = engine_version()
    machine = platform.machine().lower()
    args = cmake_args(target, machine=machine)
    compiler = f"prebuilt {file_sha256(wheel)[:16]}" if wheel else compiler_id()
    key = engine_key(version, args, machine, compiler)
    folder = engine_root() / key
    record_path = folder / "record.json"
    record = None
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = None
    lib_dir = engine_lib_dir(python)
    lib = cpu_library(lib_dir) if lib_dir else None
    if wheel is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / wheel.name).is_file():
            shutil.copy(wheel, folder / wheel.name)
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    action = plan_install(record, file_sha256(lib) if lib else None, wheels, rebuild)
    if action == "keep":
        _say(f"The engine ({ENGINE} {version}, {key}) is installed and up to date.")
        return record
    t0 = time.time()
    wheel = wheels[-1] if action == "install" else build_wheel(python, version, args, folder)
    built_s = round(time.time() - t0, 1) if action == "build" else None
    _say(f"Installing the engine from {wheel}")
    if (
        _pip(python, "install", "--quiet", "--no-deps", "--force-reinstall", "--no-cache-dir", str(wheel))
        != 0
    ):
        raise KitError(f"pip could not install {wheel}")
    lib_dir = engine_lib_dir(python)
    lib = cpu_library(lib_dir) if lib_dir else None
    if lib is None:
        raise KitError(f"the installed engine has no CPU library in {lib_dir}")
    info = _system_info(python, lib_dir)
    compiled = system_info_features(info)
    bad = unsafe_features(compiled, cpu_flags(), machine) if target == "native" else []
    if bad:
        raise KitError(
            f"the engine built with {' '.join(args)} still holds {', '.join(bad)}; "
            f"delete {folder} and run make install again"
        )
    record = {
        "key": key,
        ENGINE: version,
        "target": target,
        "cmake_args": args,
        "compiled_features": compiled,
        "system_info": info.strip(),
        "machine": machine,
        "compiler": compiler,
        "cpu_library_sha256": file_sha256(lib),
        "wheel": wheel.name,
        "built_s": built_s if built_s is not None else (record or {}).get("built_s"),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    _say(f"Engine installed: {' '.join(compiled)}")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m research.llamacpp.flags", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("action", choices=("install", "flags"))
    p.add_argument("--target", choices=TARGETS, default="native", help="native (default) or phone (arm64)")
    p.add_argument("--python", help="the interpreter to install into (default: this one)")
    p.add_argument("--rebuild", action="store_true", help="compile again even if a wheel of this key exists")
    p.add_argument("--wheel", type=Path, help="install and record this wheel, built elsewhere for --target")
    args = p.parse_args(argv)
    try:
        if args.action == "flags":
            print("\n".join(cmake_args(args.target)))
        else:
            install(args.target, args.python, args.rebuild, args.wheel)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

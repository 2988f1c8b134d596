"""Build llama.cpp's own tools from source: for this machine, on the phone in Termux, or for Android.

The source is, by default, the llama.cpp inside the sdist of the installed llama-cpp-python, so
the tools (llama-bench, llama-quantize, ...) run the same llama.cpp as the kit's engine and work
offline once the sdist is cached. Builds land in a cache folder and rebuild incrementally.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from research import child, device
from research.errors import KitError
from research.llamacpp import flags as engine_build

DEFAULT_TARGETS = ("llama-cli", "llama-bench", "llama-quantize", "llama-perplexity")
KNOWN_TARGETS = (*DEFAULT_TARGETS, "llama-server", "llama-completion", "llama-simple", "llama-tokenize")
KINDS = ("native", "termux", "android", "aarch64-linux")
PHONE_ARCH = engine_build.PHONE_ARCH  # the Galaxy S21 class's ARM features


def cache_root() -> Path:
    """$RESEARCH_BUILD_DIR, else ~/.cache/research/llama.cpp: sources, build trees, records."""
    return engine_build.sdist_dir().parent


@dataclass(frozen=True)
class Source:
    path: Path  # the folder holding llama.cpp's top CMakeLists.txt
    commit: str  # short commit, or "unknown"
    origin: str  # "sdist" | "git" | "dir"
    llama_cpp_python: str | None = None  # version of the sdist it came from


def installed_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise KitError("llama-cpp-python is not installed; run: make install") from None


def llama_source_dir(path: Path) -> Path:
    """The llama.cpp folder at `path` (or inside a llama-cpp-python source tree); KitError if none."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise KitError(f"no such folder: {path}")
    for candidate in (path, path / "vendor" / "llama.cpp"):
        if (candidate / "include" / "llama.h").is_file() and (
            candidate / "ggml" / "CMakeLists.txt"
        ).is_file():
            return candidate
    raise KitError(
        f"{path} is not llama.cpp source (no include/llama.h and ggml/ there); name the folder of a "
        "llama.cpp checkout (git clone https://github.com/ggml-org/llama.cpp) or leave --source out"
    )


def changelog_commit(sdist_root: Path, version: str) -> str | None:
    """The llama.cpp commit that llama-cpp-python's CHANGELOG names for `version`."""
    try:
        text = (sdist_root / "CHANGELOG.md").read_text(encoding="utf-8")
    except OSError:
        return None
    section = re.search(rf"^## \[{re.escape(version)}\](.*?)(?=^## \[)", text, re.S | re.M)
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1)) if section else None
    return found.group(1) if found else None


def sdist_source(version: str | None = None) -> Source:
    """llama.cpp from the llama-cpp-python sdist of `version` (default: installed), cached."""
    version = version or installed_version()
    root = cache_root() / "src" / f"llama_cpp_python-{version}"
    if not (root / "vendor" / "llama.cpp" / "include" / "llama.h").is_file():
        _fetch_sdist(version, root)
    return Source(
        root / "vendor" / "llama.cpp", changelog_commit(root, version) or "unknown", "sdist", version
    )


def _fetch_sdist(version: str, root: Path) -> None:
    dl = cache_root() / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    tarball = dl / f"llama_cpp_python-{version}.tar.gz"
    if not tarball.is_file():
        print(
            f"Fetching the llama-cpp-python {version} source (~80 MB, once) ...", file=sys.stderr, flush=True
        )
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            f"llama-cpp-python=={version}",
            "-d",
            str(dl),
        ]
        r = child.run(cmd, "pip download", check=False)
        if r.returncode != 0 or not tarball.is_file():
            last = child.last_line(r.stderr) or "no output"
            raise KitError(
                f"could not fetch the llama-cpp-python {version} source with pip ({last}); "
                "name a llama.cpp folder with --source instead"
            )
    tmp = Path(tempfile.mkdtemp(dir=dl))
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")  # refuses links and paths outside tmp
        (extracted,) = tmp.iterdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(extracted, root)
    except (tarfile.TarError, ValueError, OSError) as e:
        raise KitError(
            f"the llama-cpp-python source archive {tarball} is damaged ({e}); delete it and retry"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_source(source: str | os.PathLike | None = None) -> Source:
    """The llama.cpp to build: a folder the user names (a git checkout or not), else the sdist."""
    if source is None:
        return sdist_source()
    path = llama_source_dir(Path(source))
    git = ["git", "-C", str(path), "rev-parse", "--short=9", "HEAD"]
    r = child.run(git, "git", check=False) if shutil.which("git") and (path / ".git").exists() else None
    if r is not None and r.returncode == 0:
        return Source(path, r.stdout.strip(), "git")
    sdist_root = path.parent.parent if path.parent.name == "vendor" else None
    version = sdist_root.name.rsplit("-", 1)[-1] if sdist_root else None
    commit = changelog_commit(sdist_root, version) if sdist_root and version else None
    return Source(path, commit or "unknown", "dir", version if commit else None)


def _need(program: str, install: str) -> str:
    found = shutil.which(program)
    if not found:
        raise KitError(f"{program} is missing: install it ({install})")
    return found


def toolchain(kind: str, ndk: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """CMake flags for a kind of build, and the C compiler it uses; KitError names what to install."""
    if kind not in KINDS:
        raise KitError(f"unknown build kind {kind!r}; choose one of {', '.join(KINDS)}")
    _need("cmake", "Debian: apt-get install cmake; Termux: pkg install cmake")
    if kind in ("native", "termux"):
        cc = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
        if not cc:
            raise KitError(
                "no C compiler: install one "
                "(Debian: apt-get install build-essential; Termux: pkg install clang)"
            )
        # The CPU's own features, without llama.cpp's AMX kernels on x86 (research.llamacpp.flags).
        # Termux's clang has no libomp at run time (llama.cpp issue 11979; Termux's own package sets it).
        cpu = engine_build.cmake_args("native")
        return [*cpu, *(["-DGGML_OPENMP=OFF"] if kind == "termux" else [])], cc
    if kind == "aarch64-linux":
        cc = _need("aarch64-linux-gnu-gcc", "apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu")
        _need("aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")
        return [
            "-DCMAKE_SYSTEM_NAME=Linux",
            "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
            f"-DCMAKE_C_COMPILER={cc}",
            f"-DCMAKE_CXX_COMPILER={shutil.which('aarch64-linux-gnu-g++')}",
            "-DGGML_NATIVE=OFF",
            f"-DGGML_CPU_ARM_ARCH={PHONE_ARCH}",
            "-DGGML_OPENMP=OFF",
            "-DCMAKE_EXE_LINKER_FLAGS=-static",  # runs under qemu-aarch64 without an arm64 sysroot
        ], cc
    if not ndk:
        raise KitError(
            "an Android build needs the NDK: pass its folder with --android-ndk PATH "
            "(Android Studio's SDK Manager or https://developer.android.com/ndk/downloads)"
        )
    tc = Path(ndk).expanduser() / "build" / "cmake" / "android.toolchain.cmake"
    if not tc.is_file():
        raise KitError(
            f"{ndk} is not an Android NDK (no build/cmake/android.toolchain.cmake); "
            "pass the NDK's own folder, e.g. ~/Android/Sdk/ndk/27.2.12479018"
        )
    # As llama.cpp's docs/android.md, plus the S21-class CPU features.
    return [
        f"-DCMAKE_TOOLCHAIN_FILE={tc}",
        "-DANDROID_ABI=arm64-v8a",
        "-DANDROID_PLATFORM=android-28",
        "-DGGML_NATIVE=OFF",
        "-DGGML_OPENMP=OFF",
        "-DGGML_LLAMAFILE=OFF",
        f"-DGGML_CPU_ARM_ARCH={PHONE_ARCH}",
    ], str(tc)


def cmake_flags(source: Source, kind: str, ndk=None) -> list[str]:
    arch, _ = toolchain(kind, ndk)
    return [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries: copy one file to the phone
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_OPENSSL=OFF",  # nothing here talks HTTPS
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # else configuring llama-server downloads its web UI
        "-DLLAMA_BUILD_UI=OFF",
        f"-DLLAMA_BUILD_COMMIT={source.commit}",
        *arch,
    ]


def build_dir(source: Source, kind: str) -> Path:
    tag = (
        source.commit
        if source.commit != "unknown"
        else hashlib.sha256(str(source.path).encode()).hexdigest()[:9]
    )
    return cache_root() / f"build-{kind}-{tag}"


def _run_logged(cmd: list[str], log, progress) -> int:
    """Run a command, everything into the log; ninja's [n/N] steps to `progress` every 10th."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as p:
        for line in p.stdout:
            log.write(line)
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m and (int(m[1]) % 10 == 0 or m[1] == m[2]):
                progress(f"  step {m[1]}/{m[2]}")
        return p.wait()


def build(
    targets=DEFAULT_TARGETS,
    source=None,
    kind: str = "native",
    ndk=None,
    jobs: int | None = None,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> dict:
    """Configure and build `targets`; returns the build record (also written beside the binaries)."""
    unknown = [t for t in targets if t not in KNOWN_TARGETS]
    if unknown:
        raise KitError(f"unknown target {unknown[0]!r}; choose from {', '.join(KNOWN_TARGETS)}")
    src = find_source(source)
    flags = cmake_flags(src, kind, ndk)
    bdir = build_dir(src, kind)
    bdir.mkdir(parents=True, exist_ok=True)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    # On a phone, more parallel compilers wake Android's phantom-process killer (Termux "signal 9").
    jobs = jobs or min(os.cpu_count() or 2, 4 if kind == "termux" else 64)
    log_path = bdir / "build.log"
    t0 = time.time()
    progress(f"Building {', '.join(targets)} of llama.cpp {src.commit} ({kind}) in {bdir}")
    with open(log_path, "w") as log:
        steps = [
            ["cmake", "-S", str(src.path), "-B", str(bdir), *generator, *flags],
            ["cmake", "--build", str(bdir), "--config", "Release", "-j", str(jobs), "--target", *targets],
        ]
        for cmd in steps:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            if _run_logged(cmd, log, progress) != 0:
                log.flush()
                tail = log_path.read_text(errors="replace").splitlines()[-25:]
                print("\n".join(tail), file=sys.stderr)
                raise KitError(f"the llama.cpp build failed (last lines above); full log: {log_path}")
    built = [t for t in KNOWN_TARGETS if (bdir / "bin" / t).is_file()]  # earlier runs' tools too
    record = {
        "kind": kind,
        "targets": built,
        "requested": list(targets),
        "llama_cpp_commit": src.commit,
        "source": str(src.path),
        "source_origin": src.origin,
        "llama_cpp_python": src.llama_cpp_python,
        "cmake_flags": flags,
        "generator": "Ninja" if generator else "default",
        "compiler": compiler_version(kind, ndk),
        "ccache": bool(shutil.which("ccache")),
        "jobs": jobs,
        "host": f"{platform.system()} {platform.machine()}",
        "cpu_features": device.cpu_features() if kind in ("native", "termux") else PHONE_ARCH.split("+"),
        "wall_s": round(time.time() - t0, 1),
        "bin_dir": str(bdir / "bin"),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (bdir / "bin").mkdir(exist_ok=True)
    (bdir / "bin" / "build.json").write_text(json.dumps(record, indent=2))
    (cache_root() / f"{kind}.json").write_text(json.dumps(record, indent=2))  # the latest of this kind
    progress(f"Built in {record['wall_s']:.0f} s: {bdir / 'bin'}")
    return record


def compiler_version(kind: str, ndk=None) -> str:
    _, cc = toolchain(kind, ndk)
    if kind == "android":
        return f"Android NDK clang ({Path(ndk).name})"
    r = child.run([cc, "--version"], f"{cc} --version", check=False)
    return (r.stdout.splitlines() or ["unknown"])[0]


def latest_record(kind: str = "native") -> dict | None:
    try:
        return json.loads((cache_root() / f"{kind}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def tool_path(name: str, kind: str = "native") -> Path | None:
    """A built tool (e.g. "llama-bench") from the latest build of `kind`, or None."""
    record = latest_record(kind)
    path = Path(record["bin_dir"]) / name if record else None
    return path if path and os.access(path, os.X_OK) else None


def check(kind: str = "native") -> tuple[bool, list[str]]:
    """What is built, and whether it matches the llama.cpp inside the installed llama-cpp-python."""
    record = latest_record(kind)
    if record is None:
        return False, [f"nothing built yet for {kind}: run python -m research build"]
    lines = [
        f"build: {record['bin_dir']} ({record['built_at']}, {record['wall_s']:.0f} s, {record['compiler']})"
    ]
    for t in record["targets"]:
        lines.append(f"  {t}: {'ok' if tool_path(t, kind) else 'MISSING'}")
    installed = installed_version()
    want = changelog_commit(cache_root() / "src" / f"llama_cpp_python-{installed}", installed)
    ok = all(tool_path(t, kind) for t in record["targets"])
    same = record["llama_cpp_python"] == installed or (
        want is not None and record["llama_cpp_commit"] == want
    )
    lines.append(
        f"llama.cpp {record['llama_cpp_commit']} (from {record['source_origin']}"
        f"{', llama-cpp-python ' + record['llama_cpp_python'] if record['llama_cpp_python'] else ''}); "
        f"installed llama-cpp-python {installed}" + (f" has llama.cpp {want}" if want else "")
    )
    lines.append(
        "matches the installed llama-cpp-python"
        if same
        else "does NOT match the installed llama-cpp-python: rebuild with python -m research build"
    )
    safe = kind not in ("native", "termux") or set(engine_build.cmake_args("native")) <= set(
        record.get("cmake_flags") or []
    )
    if not safe:
        lines.append(
            "built with other CPU flags than the safe ones for this CPU (-march=native may hold AMX, "
            "llama.cpp issue 20824): rebuild with python -m research build"
        )
    return ok and same and safe, lines


def cli_run(
    question: str,
    model=None,
    n_predict: int = 32,
    kind: str = "native",
    runner=(),
    threads: int | None = None,
    timeout: float = 900,
) -> tuple[list[str], str]:
    """Run the built llama-cli once, greedily (optionally under an emulator such as qemu-aarch64):
    (the command, what it printed)."""
    from research.models.catalog import resolve

    exe = tool_path("llama-cli", kind)
    if exe is None:
        raise KitError(
            f"llama-cli is not built for {kind}: python -m research build --kind {kind} --targets llama-cli"
        )
    cmd = [
        *runner,
        str(exe),
        "-m",
        str(resolve(model).path),
        "-p",
        question,
        "-st",
        "-n",
        str(n_predict),
        "--temp",
        "0",
        "--seed",
        "1",
        "-c",
        "512",
        "-t",
        str(threads or min(os.cpu_count() or 1, 4)),
        "--no-warmup",
    ]
    return cmd, child.run(cmd, "llama-cli", timeout=timeout).stdout


def cli_answer_of(printed: str, question: str) -> str | None:
    """The answer in what llama-cli printed: a banner, "> question", the answer, "[ Prompt: … ]"."""
    m = re.search(rf"> {re.escape(question)}\n(.*?)\n*\[ Prompt:", printed, re.S)
    return m.group(1).strip() if m else None


def cli_answer(
    question: str, model=None, n_predict: int = 32, kind: str = "native", runner=(), timeout: float = 900
) -> str:
    """One greedy answer from the built llama-cli (optionally under an emulator such as qemu-aarch64)."""
    _, printed = cli_run(question, model, n_predict, kind, runner, timeout=timeout)
    return cli_answer_of(printed, question) or printed.strip()

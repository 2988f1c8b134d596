"""`research doctor`: what a machine that misbehaves needs checked, one line each, with the fix.

For a user, or a workshop helper at a laptop that will not answer: the CPU and what llama.cpp can
use of it, the engine's build and whether it is safe on this CPU, the self-test (a model decoding
a few tokens in a child process, research.engine.selftest), the kit's own llama.cpp tools, free memory
and disk, the folders the kit writes and who can read them, and the switches that keep the
libraries offline. Each check says ok, warn or FAIL; a FAIL names its fix. Nothing here changes
anything, but the self-test's verdict is remembered as a first load would remember it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import stat
import sys
import time
from pathlib import Path

from research import device
from research.errors import KitError
from research.llamacpp import flags as engine_build
from research.units import MB

#: Free disk below which a check warns: a catalog model of 1-4 B parameters is 1-2.5 GB.
LOW_DISK = 3 * 1024 * MB


@dataclasses.dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "FAIL"
    found: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.status:4}  {self.name:10} {self.found}{fix}"


def _cpu() -> Check:
    flags = engine_build.cpu_flags()
    simd = [f for f in device.cpu_features() if not f.startswith("amx")]
    amx = sorted(f for f in flags if f.startswith("amx"))
    cores = f"{os.cpu_count()} cores, {device.default_threads()} used by the engine"
    found = (
        f"{device.cpu_info()} ({platform.machine()}, {cores}): {' '.join(simd) or 'no SIMD features listed'}"
    )
    if amx:
        found += f"; advertises {' '.join(amx)} (the kit builds llama.cpp without AMX: llama.cpp issue 20824)"
    return Check("cpu", "ok", found)


def _engine() -> tuple[Check, dict | None]:
    from research.engine import selftest
    from research.engine.provenance import llama_cpp_commit, package_version

    try:
        e = selftest.engine()
    except (KitError, ImportError, OSError) as err:
        return Check("engine", "FAIL", f"llama-cpp-python does not load: {err}", "make install"), None
    version = package_version("llama-cpp-python")
    compiled = " ".join(e["compiled_features"])
    bad = engine_build.unsafe_features(e["compiled_features"], engine_build.cpu_flags())
    built = (
        f"built by the kit with {' '.join(a for a in e['cmake_args'] if a.endswith('=ON') or 'ARCH' in a)}"
        if e["cmake_args"]
        else "built outside the kit (flags unknown)"
    )
    found = f"llama-cpp-python {version}, llama.cpp {llama_cpp_commit()}, {built}; compiled: {compiled}"
    if bad:
        return Check(
            "engine",
            "FAIL",
            found + f"; holds {', '.join(bad)}",
            "rebuild it for this CPU: make install "
            "(conda: PYTHONPATH=src python -m research.llamacpp.flags install)",
        ), e
    if not e["cmake_args"]:
        return Check("engine", "warn", found, "make install builds it with flags known to be safe here"), e
    return Check("engine", "ok", found), e


def _selftest(run: bool) -> Check:
    from research.engine import EngineConfig, prepare, selftest
    from research.models import vouched as trust

    if not run:
        return Check("self-test", "warn", "skipped (--no-selftest)")
    t0 = time.perf_counter()
    try:
        ref, info, config = prepare(None, EngineConfig())
        verdict = selftest.ensure(ref.path, info, config, trusted=trust.trusted(ref), force=True)
    except KitError as err:
        return Check("self-test", "FAIL", str(err), "make install, then run this again")
    seconds = time.perf_counter() - t0
    found = (
        f"{ref.path.name} loaded and decoded {selftest.DECODE_TOKENS} tokens in a child process with "
        f"{config.n_threads or device.default_threads()} threads in {seconds:.1f} s"
    )
    if verdict.warning:
        return Check("self-test", "warn", f"{found}, only without extra buffer types: {verdict.warning}")
    return Check("self-test", "ok", found)


def _tools() -> Check:
    from research.llamacpp import build

    record = build.latest_record("native")
    if record is None:
        return Check(
            "tools",
            "ok",
            "llama.cpp's own tools are not built (needed by bench, quality and notebook 01 only)",
            "python -m research build, when you need them",
        )
    ok, lines = build.check("native")
    flags = record.get("cmake_flags") or []
    machine = platform.machine().lower()
    native = "-DGGML_NATIVE=ON" in flags and machine in engine_build.X86
    amx = [f for f in engine_build.cpu_flags() if f.startswith("amx")]
    targets = ", ".join(record.get("targets", []))
    found = f"{record['bin_dir']} (llama.cpp {record.get('llama_cpp_commit')}, {targets})"
    if native and amx:
        return Check(
            "tools",
            "FAIL",
            found + "; built with -march=native on a CPU with AMX",
            "python -m research build",
        )
    if not ok:
        return Check("tools", "warn", found + "; " + lines[-1], "python -m research build")
    return Check("tools", "ok", found)


def _memory() -> Check:
    from research.engine import memory
    from research.models.catalog import resolve
    from research.models.gguf import read_gguf

    have, limiter = device.available_bytes()
    total = device.psutil.virtual_memory().total
    found = f"{have / MB:,.0f} MB free of {total / MB:,.0f} MB (limited by {limiter})"
    try:
        ref = resolve(None)
        need = memory.estimate(read_gguf(ref.path), 4096)
    except KitError as err:
        return Check("memory", "FAIL", f"{found}; the bundled model: {err}", "make install")
    found += f"; the bundled model needs about {need.total / MB:.0f} MB"
    if need.total > have:
        return Check("memory", "FAIL", found, "close other programs, or use a shorter context (--ctx 1024)")
    return Check("memory", "ok", found)


def _disk(folders: dict[str, Path]) -> Check:
    seen, parts, low = set(), [], False
    for name, folder in folders.items():
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            continue
        if probe.stat().st_dev in seen:
            continue
        seen.add(probe.stat().st_dev)
        parts.append(f"{usage.free / MB:,.0f} MB free where {name} lives")
        low = low or usage.free < LOW_DISK
    found = "; ".join(parts) or "no folder could be read"
    if low:
        return Check(
            "disk",
            "warn",
            found,
            f"most catalog models take 1,000-2,500 MB: free at least {LOW_DISK // MB:,} MB",
        )
    return Check("disk", "ok", found)


def _folder(name: str, folder: Path, private: bool) -> Check:
    if not folder.exists():
        return Check(name, "ok", f"{folder} (not made yet: the kit makes it when it first writes there)")
    if not folder.is_dir():
        return Check(name, "FAIL", f"{folder} is not a folder", f"move it away: mv {folder} {folder}.old")
    mode = stat.S_IMODE(folder.stat().st_mode)
    found = f"{folder} (mode {mode:o})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return Check(name, "FAIL", found + ", not writable by you", f"chmod u+rwx {folder}")
    if private and mode & 0o077:
        return Check(name, "warn", found + ", readable by other users of this machine", f"chmod 700 {folder}")
    return Check(name, "ok", found)


def _offline() -> Check:
    from research import offline

    unset = [f"{k}={v}" for k, v in offline.SWITCHES.items() if os.environ.get(k) != v]
    found = "the kit sets " + " ".join(f"{k}={v}" for k, v in offline.SWITCHES.items()) + " itself"
    if unset:
        found += (
            f"; outside the kit this shell has {len(unset)} of them unset, so other programs may go online"
        )
    return Check("offline", "ok", found)


def checks(run_selftest: bool = True) -> list[Check]:
    from research.llamacpp import build
    from research.models.catalog import models_dir
    from research.paths import cache_dir, user_data_dir

    folders = {
        "your data": user_data_dir(),
        "the cache": cache_dir(),
        "models": models_dir(),
        "builds": build.cache_root(),
    }
    out = [
        Check(
            "system", "ok", f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
        ),
        _cpu(),
    ]
    engine, _ = _engine()
    out.append(engine)
    out.append(_selftest(run_selftest and engine.status != "FAIL"))
    out += [_tools(), _memory(), _disk(folders)]
    out.append(_folder("data", folders["your data"], private=True))
    out.append(_folder("cache", folders["the cache"], private=False))
    out.append(_offline())
    return out


def main(args) -> int:
    found = checks(run_selftest=not args.no_selftest)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=2))
    else:
        for c in found:
            print(c.line())
        bad = [c for c in found if c.status == "FAIL"]
        print(f"\n{len(bad)} problem{'s' * (len(bad) != 1)} found." if bad else "\nNo problem found.")
    sys.stdout.flush()
    return 1 if any(c.status == "FAIL" for c in found) else 0

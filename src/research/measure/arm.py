"""The page rehearsed on ARM: an arm64 Debian under qemu, the kit in it with the phone's flags.

The closest thing to the phone that runs here. As root, `make arm-rehearsal`:

1. mounts binfmt_misc and registers qemu-aarch64 (Debian's qemu-user-static), so arm64 programs
   run on this x86 machine, each instruction emulated;
2. builds an arm64 Debian userland with debootstrap from Debian's own packages (cached);
3. builds the engine, llama-cpp-python with llama.cpp for the Galaxy S21's CPU
   (`-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16`, no OpenMP, as in Termux), by cross-compiling
   on this machine (aarch64-linux-gnu-gcc) into an arm64 wheel; `--emulated-build` also compiles
   the same wheel inside the arm64 userland under qemu, to measure which way is faster;
4. installs the kit into a venv there (its dependencies from PyPI's aarch64 wheels) and records
   the engine as research.llamacpp.flags does;
5. answers one question through `research chat --json`, and one through the page: `research
   demo` under qemu, asked over HTTP (gradio_client) and in Chromium on this machine;
6. writes what it measured to docs/results/arm_rehearsal.json and .md.

What it proves: the kit's Python side (the page, gradio, the engine through ctypes, the
self-test in a child) runs on an aarch64 Linux, and llama.cpp built with the phone's
instruction set answers there. What it does not: Termux is Android's bionic libc, not glibc,
with its own Python packages (PyPI's manylinux wheels do not install there); qemu's speed says
nothing of a phone's (every instruction is translated); qemu 7.2 shows the guest this
machine's /proc/cpuinfo; nothing of Android's process killer, memory limits or app sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from research.errors import KitError
from research.llamacpp import flags as engine_build
from research.measure import arm_record
from research.measure.arm_userland import (
    Mounted,
    _chroot,
    _chroot_cmd,
    _say,
    binfmt,
    elf_machine,
    retag,
    rootfs,
)
from research.page import server
from research.page import text as page_text
from research.paths import REPO_ROOT, cache_dir

#: Cross-compiling llama-cpp-python for the phone's CPU: Debian's aarch64 toolchain, no OpenMP
#: (Termux's clang has no libomp at run time, and the kit builds so there).
CROSS_ARGS = [
    "-DCMAKE_SYSTEM_NAME=Linux",
    "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
    "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc",
    "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++",
    "-DGGML_NATIVE=OFF",
    f"-DGGML_CPU_ARM_ARCH={engine_build.PHONE_ARCH}",
    "-DGGML_OPENMP=OFF",
]
QUESTION = "What is the capital of France?"
VENV = "/opt/research-venv"
KIT = "/opt/research-kit"


def cross_wheel(work: Path, log: Path) -> tuple[Path, float | None]:
    """llama-cpp-python cross-compiled for the phone's CPU into an arm64 wheel (cached); seconds."""
    version = engine_build.engine_version()
    key = engine_build.engine_key(version, CROSS_ARGS, "aarch64", engine_build.compiler_id() + " (cross)")
    folder = cache_dir() / "engine-cross" / key
    done = sorted(folder.glob("*linux_aarch64.whl"))
    if done:
        return done[-1], None
    for tool in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "cmake"):
        if not shutil.which(tool):
            raise KitError(
                f"{tool} is missing: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu cmake"
            )
    t = time.perf_counter()
    built = engine_build.build_wheel(sys.executable, version, CROSS_ARGS, folder)
    seconds = time.perf_counter() - t
    wheel = retag(built)
    built.unlink()
    with zipfile.ZipFile(wheel) as z:
        lib = next(n for n in z.namelist() if n.endswith("libggml-cpu.so"))
        (work / "libggml-cpu.so").write_bytes(z.read(lib))
    if elf_machine(work / "libggml-cpu.so") != 183:
        raise KitError(f"{wheel.name} does not hold arm64 code")
    return wheel, seconds


def emulated_build(folder: Path, log: Path) -> float:
    """The same wheel compiled inside the arm64 userland, under qemu: the other way to build it."""
    version = engine_build.engine_version()
    sdist = engine_build.sdist_dir() / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        raise KitError(f"{sdist} is missing: make install fetches it")
    shutil.copy(sdist, folder / "tmp" / sdist.name)
    args = " ".join(
        ["-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={engine_build.PHONE_ARCH}", "-DGGML_OPENMP=OFF"]
    )
    cmd = [
        f"{VENV}/bin/pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "-w",
        "/tmp/emulated",
        f"/tmp/{sdist.name}",
    ]
    return _chroot(folder, cmd, "compiling the engine under qemu", log, env={"CMAKE_ARGS": args})


def copy_kit(folder: Path) -> str:
    """The kit as committed (`git archive HEAD`: what a fresh clone holds, not work in progress)
    into the userland; the commit."""
    target = folder / KIT.lstrip("/")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=9", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    git = ["git", "-C", str(REPO_ROOT), "archive", "HEAD"]
    archive = subprocess.run(git, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return commit or "unknown"


def chat(folder: Path, log: Path) -> dict:
    """One greedy answer through `research chat --json` inside the userland, and its wall time."""
    cmd = [f"{VENV}/bin/python", "-m", "research", "chat", "--prompt", QUESTION, "--json"]
    cmd += ["--temperature", "0", "--max-tokens", "32", "--ctx", "1024"]
    t = time.perf_counter()
    r = subprocess.run(
        _chroot_cmd(folder, cmd, {"RESEARCH_HOME": "/root/research-home"}),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t
    with open(log, "a") as f:
        f.write(f"$ research chat (under qemu)\n{r.stdout}\n{r.stderr}\n")
    if r.returncode != 0:
        raise KitError(
            f"research chat under qemu failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    out = json.loads(r.stdout)
    keep = (
        "answer",
        "prompt_tokens",
        "completion_tokens",
        "ttft_s",
        "prompt_tps",
        "decode_tps",
        "total_s",
        "peak_rss_mb",
        "n_threads",
    )
    return {k: out.get(k) for k in keep} | {
        "wall_s": round(wall, 1),
        "engine_build": out["provenance"]["engine_build"],
    }


def doctor(folder: Path) -> list[str]:
    """What `research doctor` prints inside the userland, line by line."""
    cmd = [f"{VENV}/bin/python", "-m", "research", "doctor"]
    env = {"RESEARCH_HOME": "/root/research-home"}
    r = subprocess.run(_chroot_cmd(folder, cmd, env), capture_output=True, text=True, timeout=1800)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]


def page(folder: Path, log: Path, port: int) -> dict:
    """The page served under qemu, asked over HTTP and in Chromium on this machine."""
    from research.measure.page import QUIET_BROWSER, find_browser, open_page

    page_log = folder / "tmp" / "page.log"
    cmd = [f"{VENV}/bin/python", "-m", "research", "demo", "--port", str(port), "--ctx", "1024"]
    env = {"RESEARCH_HOME": "/root/research-home", "GRADIO_TEMP_DIR": "/tmp/gradio"}
    t = time.perf_counter()
    with open(page_log, "w") as out:
        proc = subprocess.Popen(_chroot_cmd(folder, cmd, env), stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - t > 1200:
                raise KitError(f"the page under qemu did not come up: {page_log.read_text()[-400:]}")
            url = _page_url(page_log.read_text(), base)  # printed with the page's token
            token = parse_qs(urlsplit(url).query).get("token", [""])[0]
            try:
                req = urllib.request.Request(base, headers={server.TOKEN_HEADER: token})
                urllib.request.urlopen(req, timeout=5).read()
                break
            except OSError:
                time.sleep(1)
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        reply = server.client(url).predict(QUESTION, temperature=0, max_tokens=24, api_name="/ask")
        http_s = time.perf_counter() - t
        out = {"start_s": round(start_s, 1), "http_answer_s": round(http_s, 1), "http_answer": _text(reply)}
        chromium = find_browser()
        if chromium:
            from playwright.sync_api import sync_playwright

            from research.measure.page_speed import RECORDER, ask

            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=chromium, args=QUIET_BROWSER, headless=True)
                try:
                    ctx = b.new_context(viewport={"width": 390, "height": 844})
                    ctx.add_init_script(RECORDER)  # the paint recorder ask() reads
                    tab = ctx.new_page()
                    tab.set_default_timeout(600_000)
                    t = time.perf_counter()
                    open_page(tab, url, timeout_ms=600_000)
                    loaded = time.perf_counter() - t
                    t = time.perf_counter()
                    got = ask(tab, QUESTION, 24)
                    answered = time.perf_counter() - t
                    shown = tab.locator("[data-testid='bot']").last.inner_text()
                    out["browser"] = (
                        {
                            "page_load_s": round(loaded, 1),
                            "total_s": round(answered, 1),  # from Enter to the figures painted
                            "answer": shown.split("\n◷")[0].strip()[:300],  # the text seen, not its figures
                        }
                        | {k: (round(v, 2) if isinstance(v, float) else v) for k, v in got.items()}
                    )
                finally:
                    b.close()
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        with open(log, "a") as f:
            f.write(f"$ research demo (under qemu)\n{page_log.read_text()}\n")


def _page_url(printed: str, default: str) -> str:
    """The address the page printed at start (it may carry a per-start token), else `default`."""
    for word in printed.split():
        if word.startswith(default):
            return word.rstrip(".,")
    return default


def _text(reply) -> str:
    """The answer's text from the page's /ask reply (the chatbot's messages, the question box),
    without its line of figures: `_text(([{"role": "assistant", "content": [{"text": "Paris.",
    "type": "text"}]}], ""))` -> "Paris."."""
    if isinstance(reply, (list, tuple)):
        reply = reply[0] if reply else ""
    if isinstance(reply, list):
        reply = reply[-1] if reply else ""
    if isinstance(reply, dict):
        reply = reply.get("content", reply)
    if isinstance(reply, list):  # Gradio 6: a message's content is a list of typed parts
        reply = "".join(part.get("text", "") for part in reply if isinstance(part, dict))
    return page_text.plain(page_text.strip_figures(str(reply))).strip()[:300]


def rehearse(folder: Path, emulated: bool, port: int) -> dict:
    if os.geteuid() != 0:
        raise KitError("the ARM rehearsal mounts binfmt_misc and runs chroot: run it as root")
    if platform.machine().lower() not in engine_build.X86:
        raise KitError("the ARM rehearsal emulates arm64 on an x86 machine; on ARM, use make install")
    work = cache_dir() / "arm-rehearsal"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "rehearsal.log"
    log.write_text("")
    t0 = time.perf_counter()
    record: dict = {"host": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()}}
    _say(f"ARM rehearsal: log in {log}")
    record["binfmt"] = binfmt()
    _say("arm64 Debian userland (debootstrap, a few minutes the first time) ...")
    record["debootstrap_s"] = _round(rootfs(folder, emulated, log))
    record["qemu"] = subprocess.run(
        ["qemu-aarch64-static", "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    _say("the engine cross-compiled for the phone's CPU ...")
    wheel, cross_s = cross_wheel(work, log)
    crossed = work / "cross-compile.json"
    if cross_s is not None:
        crossed.write_text(json.dumps({"seconds": round(cross_s, 1), "date": time.strftime("%Y-%m-%d")}))
    record["engine"] = {
        "cross_args": CROSS_ARGS,
        "wheel": wheel.name,
        "cross_compile": json.loads(crossed.read_text()) if crossed.is_file() else None,
    }
    with Mounted(folder):
        _say("a venv with the kit inside the userland (dependencies from PyPI's aarch64 wheels) ...")
        record["kit_commit"] = copy_kit(folder)
        shutil.copy(wheel, folder / "tmp" / wheel.name)
        t = time.perf_counter()
        if not (folder / VENV.lstrip("/") / "bin" / "python").exists():
            _chroot(folder, ["python3", "-m", "venv", VENV], "making the venv", log)
        _chroot(
            folder,
            [f"{VENV}/bin/pip", "install", "--no-deps", "--force-reinstall", f"/tmp/{wheel.name}"],
            "installing the engine",
            log,
        )
        install = [f"{VENV}/bin/pip", "install", "-e", KIT]  # editable, as Termux: data/ is read from KIT
        _chroot(folder, install, "installing the kit under qemu", log, timeout=7200)
        record["kit_install_s"] = round(time.perf_counter() - t, 1)
        _chroot(
            folder,
            [
                f"{VENV}/bin/python",
                "-m",
                "research.llamacpp.flags",
                "install",
                "--target",
                "phone",
                "--wheel",
                f"/tmp/{wheel.name}",
            ],
            "recording the engine",
            log,
        )
        measured = work / "emulated-compile.json"
        if emulated:
            _say("the same engine compiled under qemu, for the comparison (long) ...")
            load = os.getloadavg()[2]
            seconds = round(emulated_build(folder, log), 1)
            # The 15-minute load average at the start and the end: 2 on two cores means nothing
            # else ran beside the build; more, that the figure is an upper bound.
            load = [round(load, 2), round(os.getloadavg()[2], 2)]
            done = {"seconds": seconds, "date": time.strftime("%Y-%m-%d"), "load_15min": load}
            measured.write_text(json.dumps(done))
        if measured.is_file():  # measured once (--emulated-build): an hour and more of compiling
            record["engine"]["emulated_compile"] = json.loads(measured.read_text())
        _say("research doctor under qemu ...")
        record["doctor"] = doctor(folder)
        _say("one answer through research chat under qemu ...")
        record["chat"] = chat(folder, log)
        _say(f"one answer through the page under qemu, port {port} ...")
        record["page"] = page(folder, log, port)
    record["total_s"] = round(time.perf_counter() - t0, 1)
    record["date"] = time.strftime("%Y-%m-%d")
    return record


def _cpu() -> str:
    from research import device

    return device.cpu_info()


def _round(x):
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.measure.arm", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rootfs", type=Path, default=cache_dir() / "arm64-rootfs", help="where the arm64 userland lives"
    )
    p.add_argument("--emulated-build", action="store_true", help="also compile the engine under qemu (long)")
    p.add_argument("--port", type=int, default=7871)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results" / "arm_rehearsal")
    args = p.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unmount on the way out
    try:
        record = rehearse(args.rootfs, args.emulated_build, args.port)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    arm_record.write(record, args.out)
    print(arm_record.markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

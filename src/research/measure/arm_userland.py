"""The ARM rehearsal's arm64 userland (research.measure.arm): binfmt_misc and qemu-aarch64, an arm64
Debian made by debootstrap, this machine's /proc, /sys and /dev mounted into it while it runs, commands
run in it by chroot, and a cross-built wheel retagged for it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from research.errors import KitError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: What the userland needs beyond minbase: Python with venv and pip, certificates for PyPI; the
#: compilers only for --emulated-build.
PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates", "libstdc++6"]
BUILD_PACKAGES = ["build-essential", "cmake", "ninja-build", "python3-dev"]
QEMU_BINFMT = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
HOST_CA = "/etc/research-host-ca.crt"  # this machine's CA bundle, copied into the userland


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, log: Path | None = None, env=None, timeout=None) -> float:
    """Run `cmd` to its end (output into `log`); seconds it took; KitError naming the log if not."""
    t = time.perf_counter()
    out = open(log, "a") if log else subprocess.DEVNULL
    try:
        if log:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    finally:
        if log:
            out.close()
    if r.returncode != 0:
        raise KitError(f"{what} failed (exit {r.returncode}); see {log}")
    return time.perf_counter() - t


def binfmt() -> str:
    """Mount binfmt_misc and register qemu-aarch64 with the fix-binary flag (it then runs inside
    the chroot without a copy of qemu there); what was done."""
    root = Path("/proc/sys/fs/binfmt_misc")
    if not (root / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], "mounting binfmt_misc")
    if (root / "qemu-aarch64").exists():
        return "qemu-aarch64 was registered already"
    if not QEMU_BINFMT.is_file():
        raise KitError("qemu-user-static is not installed: apt-get install qemu-user-static debootstrap")
    (root / "register").write_text(QEMU_BINFMT.read_text().strip())
    return f"registered {QEMU_BINFMT.read_text().split(':')[-2]}"


def rootfs(folder: Path, build_tools: bool, log: Path) -> float | None:
    """An arm64 Debian in `folder` (debootstrap, once); seconds it took (None: it was there)."""
    if (folder / "etc" / "debian_version").is_file() and (folder / "usr" / "bin" / "python3").exists():
        if build_tools and not (folder / "usr" / "bin" / "cmake").exists():
            _chroot(folder, ["apt-get", "install", "-y", "-q", *BUILD_PACKAGES], "installing compilers", log)
        return None
    if not shutil.which("debootstrap"):
        raise KitError("debootstrap is not installed: apt-get install debootstrap qemu-user-static")
    shutil.rmtree(folder, ignore_errors=True)
    include = ",".join(PACKAGES + (BUILD_PACKAGES if build_tools else []))
    cmd = [
        "debootstrap",
        "--arch=arm64",
        "--variant=minbase",
        f"--include={include}",
        SUITE,
        str(folder),
        MIRROR,
    ]
    return _run(cmd, "debootstrap of an arm64 Debian", log)


class Mounted:
    """/proc, /sys and /dev of this machine inside the userland while it runs; resolv.conf for pip."""

    def __init__(self, folder: Path):
        self.folder, self.done = folder, []

    def __enter__(self):
        for kind, target in (("proc", "proc"), ("sysfs", "sys"), ("bind", "dev")):
            point = self.folder / target
            point.mkdir(exist_ok=True)
            if os.path.ismount(point):  # left by a run that was killed: ours to undo
                self.done.append(point)
                continue
            cmd = (
                ["mount", "--bind", f"/{target}", str(point)]
                if kind == "bind"
                else ["mount", "-t", kind, kind, str(point)]
            )
            _run(cmd, f"mounting {point}")
            self.done.append(point)
        shutil.copy("/etc/resolv.conf", self.folder / "etc" / "resolv.conf")
        # pip in the userland trusts what pip here trusts (a proxy's own CA, where there is one).
        bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
        if bundle.is_file():
            shutil.copy(bundle, self.folder / HOST_CA.lstrip("/"))
        return self

    def __exit__(self, *exc):
        for point in reversed(self.done):
            subprocess.run(["umount", "-l", str(point)], check=False)


def _chroot_cmd(folder: Path, cmd: list[str], env: dict | None = None) -> list[str]:
    base = {"HOME": "/root", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
    if (folder / HOST_CA.lstrip("/")).is_file():
        base |= {"PIP_CERT": HOST_CA, "SSL_CERT_FILE": HOST_CA}
    pairs = [f"{k}={v}" for k, v in (base | (env or {})).items()]
    return ["chroot", str(folder), "/usr/bin/env", "-i", *pairs, *cmd]


def _chroot(
    folder: Path, cmd: list[str], what: str, log: Path, env: dict | None = None, timeout=None
) -> float:
    return _run(_chroot_cmd(folder, cmd, env), what, log, timeout=timeout)


def retag(wheel: Path, platform_tag: str = "linux_aarch64") -> Path:
    """A copy of a wheel with another platform tag (a cross-built wheel is named for the machine
    that built it): the WHEEL file's Tag and its line in RECORD rewritten."""
    old_tag = wheel.stem.split("-")[-1]
    out = wheel.with_name(wheel.name.replace(old_tag, platform_tag))
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        names = src.namelist()
        wheel_file = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        record_file = next(n for n in names if n.endswith(".dist-info/RECORD"))
        text = src.read(wheel_file).decode().replace(f"-{old_tag}", f"-{platform_tag}")
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows = list(csv.reader(io.StringIO(src.read(record_file).decode())))
        rows = [
            [r[0], f"sha256={digest}", str(len(text.encode()))] if r and r[0] == wheel_file else r
            for r in rows
        ]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        for name in names:
            data = (
                text.encode()
                if name == wheel_file
                else buf.getvalue().encode()
                if name == record_file
                else src.read(name)
            )
            dst.writestr(src.getinfo(name), data)
    return out


def elf_machine(path: Path) -> int:
    """The e_machine field of an ELF file: 183 for aarch64, 62 for x86-64."""
    head = path.read_bytes()[:20]
    return int.from_bytes(head[18:20], "little")

"""The ARM rehearsal's record (research.measure.arm): written as JSON and as the Markdown page in
docs/results that says what it measured, what it proves and what it does not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    out.with_suffix(".md").write_text(markdown(record))


def markdown(r: dict) -> str:
    e, c, p = r["engine"], r["chat"], r["page"]
    b = p.get("browser") or {}
    rows = [
        ("arm64 Debian userland (debootstrap)", _s(r.get("debootstrap_s"), "cached")),
        ("engine cross-compiled on the host", _emulated(e.get("cross_compile"))),
        ("engine compiled under qemu (`--emulated-build`)", _emulated(e.get("emulated_compile"))),
        ("kit and dependencies installed under qemu", _s(r.get("kit_install_s"))),
        ("`research chat`: wall time of one answer", _s(c["wall_s"])),
        ("`research chat`: decode under qemu", f"{c['decode_tps']:.1f} t/s"),
        ("`research chat`: prompt under qemu", f"{c['prompt_tps']:.1f} t/s"),
        ("page up (`research demo` under qemu)", _s(p["start_s"])),
        ("page: one answer over HTTP", _s(p["http_answer_s"])),
        ("page: one answer in Chromium (Enter to its figures painted)", _s(b.get("total_s"))),
        ("page in Chromium: decode as painted", f"{b['painted_tps']:.2f} t/s" if "painted_tps" in b else "?"),
        ("whole rehearsal", _s(r["total_s"])),
    ]
    table = "\n".join(f"| {a} | {v} |" for a, v in rows)
    return f"""# The page rehearsed on ARM (arm64 Debian under qemu)

Made by `make arm-rehearsal` (`python -m research.measure.arm`) on {r["date"]}, on {r["host"]["cpu"]}
({r["host"]["cores"]} cores), {r["qemu"]}. The engine: llama-cpp-python with llama.cpp built
`{" ".join(a for a in e["cross_args"] if "GGML" in a)}` (the Galaxy S21 class's CPU, no OpenMP).

| step | time |
|---|---|
{table}

`research chat` answered *{c["answer"]!r}* ({c["completion_tokens"]} tokens); the page answered
*{p["http_answer"]!r}* over HTTP{" and " + repr(b.get("answer", "")) + " in Chromium" if b else ""}.
The engine build it recorded: {", ".join(c["engine_build"]["compiled_features"])}.

`research doctor` under qemu printed:

```
{chr(10).join(r.get("doctor", []))}
```

Speeds under qemu are not a phone's: every arm64 instruction is translated on this x86 machine.

What it proves: the kit's Python side (the page, gradio, the engine through ctypes, the self-test
in a child) runs on an aarch64 Linux, and llama.cpp compiled for the phone's instruction set
answers there, on the page and in the terminal. What it does not prove about Termux: Android's
libc is bionic, not glibc, and Termux has its own Python packages (PyPI's manylinux wheels used
here do not install there); nothing of Android's process killer, memory limits, app sandbox or
Chromium on Android; qemu 7.2 shows the guest this machine's /proc/cpuinfo.
"""


def _emulated(m: dict | None) -> str:
    if not m:
        return "not measured"
    load = m.get("load_15min")
    beside = f", 15-minute load {load[0]}-{load[1]} on {os.cpu_count()} cores" if load else ""
    return f"{_s(m['seconds'])} (measured {m['date']}{beside})"


def _s(x, missing: str = "?") -> str:
    if x is None:
        return missing
    return f"{x / 60:.1f} min" if x >= 120 else f"{x:.1f} s"

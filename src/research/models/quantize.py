"""A ladder of quantized files from one source GGUF, with their true size and bits per weight.

Each file is made by llama.cpp's own `llama_model_quantize` (through llama-cpp-python, so no
build is needed) in a child process: a crash or a full disk ends the child, the partial file
is removed, and the kit reports one line. llama.cpp quietly swaps a k-quant for a legacy type
on tensors whose rows are not a multiple of 256 wide (576 in SmolLM2, 3200 in Orca-Mini-3B);
the kit reads those fallbacks from llama.cpp's log and reports them, because a "Q4_K_M" that is
mostly Q5_0 is not the file its name promises.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from research import child
from research.errors import KitError
from research.models.catalog import resolve
from research.models.gguf import read_gguf
from research.units import MB


@dataclass(frozen=True)
class QuantType:
    """One quantization type llama.cpp can write."""

    name: str
    ftype: str  # the llama_ftype constant in llama_cpp
    bpw: float  # nominal bits per weight of its main tensor type (tools/quantize README)
    fallback: str | None = None  # what a 256-block type becomes on rows not a multiple of 256


#: The registry: the legacy types, then the k-quants, lowest precision first within each.
TYPES: dict[str, QuantType] = {
    t.name: t
    for t in (
        QuantType("Q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0", 4.5),
        QuantType("Q4_1", "LLAMA_FTYPE_MOSTLY_Q4_1", 5.0),
        QuantType("Q5_0", "LLAMA_FTYPE_MOSTLY_Q5_0", 5.5),
        QuantType("Q5_1", "LLAMA_FTYPE_MOSTLY_Q5_1", 6.0),
        QuantType("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", 8.5),
        QuantType("F16", "LLAMA_FTYPE_MOSTLY_F16", 16.0),
        QuantType("Q2_K", "LLAMA_FTYPE_MOSTLY_Q2_K", 2.63, "Q4_0"),
        QuantType("Q3_K_S", "LLAMA_FTYPE_MOSTLY_Q3_K_S", 3.44, "Q4_0"),
        QuantType("Q3_K_M", "LLAMA_FTYPE_MOSTLY_Q3_K_M", 3.91, "Q4_0"),
        QuantType("Q3_K_L", "LLAMA_FTYPE_MOSTLY_Q3_K_L", 4.27, "Q4_0"),
        QuantType("Q4_K_S", "LLAMA_FTYPE_MOSTLY_Q4_K_S", 4.58, "Q5_0"),
        QuantType("Q4_K_M", "LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.89, "Q5_0"),
        QuantType("Q5_K_S", "LLAMA_FTYPE_MOSTLY_Q5_K_S", 5.54, "Q5_1"),
        QuantType("Q5_K_M", "LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.69, "Q5_1"),
        QuantType("Q6_K", "LLAMA_FTYPE_MOSTLY_Q6_K", 6.56, "Q8_0"),
    )
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # llama-quantize's own aliases
#: Source precision by general.file_type name, for types outside the registry.
_SOURCE_BPW = {"F32": 32.0, "BF16": 16.0, "ALL_F32": 32.0}

#: A ladder for the notebook: the reference (F16) down to the smallest k-quant.
LADDER = ("F16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K")

_FALLBACK_RE = re.compile(
    r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\)"
    r".*?-> falling back to\s+(\S+)"
)


def quant_type(name: str) -> QuantType:
    """The registry entry for a type name, any case: "q4_k" -> Q4_K_M; KitError if unknown."""
    key = ALIASES.get(name.strip().upper(), name.strip().upper())
    if key not in TYPES:
        raise KitError(f"unknown quantization type {name!r}; choose from: {', '.join(TYPES)}")
    return TYPES[key]


def parse_types(spec: str | list[str]) -> list[QuantType]:
    """ "q4_0, Q8_0" -> [Q4_0, Q8_0], without duplicates, in the given order."""
    names = spec.split(",") if isinstance(spec, str) else spec
    out: list[QuantType] = []
    for name in filter(str.strip, names):
        t = quant_type(name)
        if t not in out:
            out.append(t)
    if not out:
        raise KitError("no quantization type given; e.g. --types Q4_0,Q8_0")
    return out


def source_bpw(info) -> tuple[str, float]:
    """Name and nominal bits per weight of a file's main type: the bundled model -> ("Q4_1", 5.0)."""
    name = info.file_type_name or max(info.type_mix, key=lambda k: info.type_mix[k]["params"])
    if name in TYPES:
        return name, TYPES[name].bpw
    return name, _SOURCE_BPW.get(name.upper(), 16.0)


def output_name(source: Path, qtype: QuantType) -> str:
    """ "SmolLM2-135M-Instruct.Q4_1.gguf" + Q8_0 -> "SmolLM2-135M-Instruct.Q8_0.gguf"."""
    stem = source.name.removesuffix(".gguf")
    known = "|".join(sorted([*TYPES, "F32", "BF16", "Q4_K", "Q5_K", "Q3_K"], key=len, reverse=True))
    stem = re.sub(rf"[.\-_]({known})$", "", stem, flags=re.IGNORECASE)
    return f"{stem}.{qtype.name}.gguf"


def estimate_bytes(info, qtype: QuantType) -> int:
    """An upper bound of the output's size, for the disk-space check before writing.

    A k-quant's fallbacks and its mixed tensors go up to Q8_0 (8.5 bits/weight) at most.
    """
    bpw = max(qtype.bpw, 8.5 if qtype.fallback else 0.0)
    return int(info.n_params * bpw / 8 * 1.05) + (16 << 20)


@dataclass
class QuantResult:
    """One file of the ladder: what was asked, what was written, and what fell back."""

    type: str
    path: Path
    size_bytes: int
    bits_per_weight: float
    type_mix: dict[str, int]  # tensor type -> parameters
    fallbacks: dict[str, int]  # "q4_K -> q5_0" -> tensors
    n_tensors: int
    seconds: float
    reused: bool = False

    @property
    def n_fallback(self) -> int:
        return sum(self.fallbacks.values())

    def as_dict(self) -> dict:
        d = dict(self.__dict__, path=str(self.path), n_fallback=self.n_fallback)
        d["size_mb"] = self.size_bytes / MB
        return d


def _record(path: Path) -> Path:
    """Beside each written file: its source and fallbacks, so a reused file still reports them."""
    return path.with_name(path.name + ".json")


def _read_record(path: Path) -> dict:
    try:
        return json.loads(_record(path).read_text())
    except (OSError, ValueError):
        return {}


def parse_fallbacks(log: str) -> dict[str, int]:
    """Count llama.cpp's "falling back" warnings by (wanted -> written) type pair."""
    return dict(Counter(f"{m[3]} -> {m[4]}" for m in _FALLBACK_RE.findall(log)))


def _quantize_here(argv: list[str]) -> None:
    """The child (`python -m research.models.quantize SRC DST FTYPE THREADS REQUANT`): llama.cpp's own
    llama_model_quantize, its log on stderr for the parent to read the fallbacks from."""
    import ctypes

    import llama_cpp

    src, dst, ftype, threads, requant = argv

    @llama_cpp.llama_log_callback
    def log(level, text, data):
        sys.stderr.write(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = int(threads)
    params.allow_requantize = requant == "1"
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    sys.exit(4 if rc != 0 else 0)


def _run_child(src: Path, part: Path, qtype: QuantType, threads: int, requant: bool) -> str:
    """Quantize src into part in a child process; the child's log, or KitError."""
    cmd = child.python_module(
        "research.models.quantize", src, part, qtype.ftype, threads, "1" if requant else "0"
    )
    r = child.run(cmd, f"quantizing to {qtype.name}", check=False)  # Ctrl-C stops the child too
    log = r.stderr
    if r.returncode == 0:
        return log
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name
        why = "the file size limit (ulimit -f) was reached" if name == "SIGXFSZ" else f"{name}"
        raise KitError(f"quantizing to {qtype.name} stopped: {why}; the partial file was removed")
    m = re.search(r"failed to quantize: (.+)", log)
    why = m[1].strip() if m else child.last_line(log) or f"exit {r.returncode}"
    if "iostream error" in why or "No space left" in why:  # how a full disk looks from C++ streams
        why = f"writing {part.name} failed (is the disk full, or a file-size limit set?)"
    raise KitError(f"quantizing to {qtype.name} failed: {why}; the partial file was removed")


def describe(path: Path, qtype: QuantType, fallbacks: dict[str, int], seconds: float, reused=False):
    """A QuantResult read from a written file's header."""
    info = read_gguf(path)
    return QuantResult(
        qtype.name,
        path,
        info.file_size,
        info.bits_per_weight,
        {k: v["params"] for k, v in info.type_mix.items()},
        fallbacks,
        len(info.tensors),
        seconds,
        reused,
    )


def quantize(
    model,
    types,
    out_dir,
    *,
    threads: int | None = None,
    allow_upcast: bool = False,
    force: bool = False,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> list[QuantResult]:
    """Write `model` quantized to each of `types` into `out_dir`; one QuantResult per type.

    Args:
        model: catalog id or path of the source GGUF (default: the bundled model).
        types: "Q4_0,Q8_0" or a list of names (see TYPES; Q4_K means Q4_K_M).
        allow_upcast: also write types above the source's precision (larger files, not better
            ones: useful to measure their speed, or as the reference for KL divergence).
        force: rewrite files that already exist; otherwise a valid file of the type is reused.
    """
    ref = resolve(model)
    info = read_gguf(ref.path)  # a file that is not GGUF stops here, before any child runs
    qtypes = parse_types(types)
    src_name, src_bpw = source_bpw(info)
    above = [t.name for t in qtypes if t.bpw > src_bpw + 1e-9]
    if above and not allow_upcast:
        raise KitError(
            f"{ref.path.name} is already {src_name} ({src_bpw:g} bits/weight): {', '.join(above)} "
            "would be larger but not more accurate. Start from F16/BF16 weights "
            "(convert_hf_to_gguf.py), or pass --allow-upcast to write them anyway (for speed, or as "
            "the KL-divergence reference)"
        )
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KitError(f"cannot use {out} as the output folder: {e.strerror}") from None
    threads = threads or os.cpu_count() or 1
    requant = src_name not in ("F32", "F16", "BF16")
    results = []
    for qtype in qtypes:
        dst = out / output_name(ref.path, qtype)
        if dst.resolve() == ref.path.resolve():
            raise KitError(f"{dst} is the source itself; choose another --out folder")
        if dst.exists() and not force:
            try:
                done = read_gguf(dst)
            except KitError:
                done = None
            if done is not None and done.file_type_name == qtype.name:
                progress(f"{qtype.name}: {dst.name} exists, reused (--force rewrites it)")
                record = _read_record(dst)
                results.append(describe(dst, qtype, record.get("fallbacks", {}), 0.0, reused=True))
                continue
        need, free = estimate_bytes(info, qtype), shutil.disk_usage(out).free
        if need > free:
            raise KitError(
                f"{qtype.name} needs up to {need / MB:.0f} MB but {out} has {free / MB:.0f} MB free; "
                "free some space or choose another --out folder"
            )
        part = dst.with_name(dst.name + ".part")
        progress(f"{qtype.name}: writing {dst.name} ...")
        t0 = time.perf_counter()
        try:
            log = _run_child(ref.path, part, qtype, threads, requant)
            os.replace(part, dst)
        finally:
            part.unlink(missing_ok=True)
        result = describe(dst, qtype, parse_fallbacks(log), time.perf_counter() - t0)
        _record(dst).write_text(
            json.dumps({"source": str(ref.path), "type": qtype.name, "fallbacks": result.fallbacks}, indent=1)
        )
        results.append(result)
        progress(f"{qtype.name}: {result.size_bytes / MB:.1f} MB, {result.bits_per_weight:.2f} bits/weight")
    return results


def format_table(results: list[QuantResult], source=None) -> str:
    """The ladder as a table: type, size, true bits per weight, tensor mix, fallbacks."""
    lines = [
        f"{'type':8} {'size MB':>8} {'bits/w':>7}  {'fallbacks (tensors)':44} tensor types (share of weights)"
    ]
    if source is not None:
        info = read_gguf(source)
        mix = " ".join(f"{k} {v['params'] / info.n_params:.0%}" for k, v in info.type_mix.items())
        name = f"source ({source_bpw(info)[0]})"
        lines.append(f"{'source':8} {info.file_size / MB:8.1f} {info.bits_per_weight:7.2f}  {name:44} {mix}")
    for r in results:
        total = sum(r.type_mix.values()) or 1
        mix = " ".join(f"{k} {v / total:.0%}" for k, v in r.type_mix.items())
        fb = (
            f"{r.n_fallback}/{r.n_tensors}: " + ", ".join(f"{k} x{v}" for k, v in r.fallbacks.items())
            if r.fallbacks
            else "none"
        )
        lines.append(f"{r.type:8} {r.size_bytes / MB:8.1f} {r.bits_per_weight:7.2f}  {fb:44} {mix}")
    return "\n".join(lines)


if __name__ == "__main__":
    _quantize_here(sys.argv[1:])

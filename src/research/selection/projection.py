"""Phone projection: decode speed from the memory-bandwidth roofline, checked against real phones.

Decoding one token reads every weight once (plus the KV cache so far), so on a CPU
tokens/s <= bandwidth / bytes read per token. How close a device gets to that roofline is
its efficiency. This machine's efficiency is measured (decode speed against bandwidth the
kit measures); a phone's is calibrated on the published phone figures in data/devices.yaml,
and each of those figures is then predicted from the others (leave one out) to show the
projection's error honestly.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from research.engine import memory
from research.errors import KitError
from research.models.quantize import ALIASES, TYPES
from research.paths import kit_data_dir
from research.units import MB

#: Decode in llama-bench's tg128 starts from an empty context: on average 64 tokens are cached.
DEPTH = 64


@dataclass(frozen=True)
class Shape:
    """What a model reads per generated token."""

    name: str
    quant: str
    weight_bytes: int  # read once per token (an untied token_embd is only looked up)
    kv_bytes_per_position: int  # f16 K and V of one cached token, all layers
    file_bytes: int

    def bytes_per_token(self, depth: int = DEPTH) -> int:
        return self.weight_bytes + self.kv_bytes_per_position * depth


def shape_of(info, name: str | None = None) -> Shape:
    """The Shape of a GGUF from its header (research.models.gguf.GGUFInfo)."""
    est = memory.estimate(info, 1, mapped=True)  # mapped: weights as read per token, not as held
    return Shape(
        name or info.path.name, info.file_type_name or "?", est.weights, est.kv_cache, info.file_size
    )


def nominal_bpw(quant: str) -> float:
    """Bits per weight of a quantization's main type: "Q4_K_S" -> 4.58."""
    q = ALIASES.get(quant.upper(), quant.upper())
    if q not in TYPES:
        raise KitError(f"no bits/weight known for quantization {quant!r}")
    return TYPES[q].bpw


def shape_of_published(row: dict) -> Shape:
    """The Shape of a published measurement's model from its architecture and file size.

    Without an exact file size, parameters x the type's nominal bits per weight stand in.
    """
    bpw = nominal_bpw(row["quant"])
    n_params = float(row.get("n_params_computed") or row["n_params"])
    total = row.get("file_bytes") or int(n_params * bpw / 8)
    embd = 0 if row["tied_embeddings"] else int(row["vocab"] * row["n_embd"] * bpw / 8)
    kv = memory.kv_cache_bytes(1, row["n_layer"], row["n_head_kv"], row["head_dim"])
    return Shape(f"{row['model'].split(' (')[0]} {row['quant']}", row["quant"], total - embd, kv, total)


@cache
def _devices_file(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KitError(f"cannot read the device profiles {path}: {e}") from None


def devices(path: str | Path | None = None) -> dict:
    """data/devices.yaml: {"devices": {id: profile}, "measurements": [published rows]}."""
    return _devices_file(Path(path) if path else kit_data_dir() / "devices.yaml")


def device(device_id: str) -> dict:
    known = devices()["devices"]
    if device_id not in known:
        raise KitError(f"unknown device {device_id!r}; known: {', '.join(known)}")
    return known[device_id]


def roofline_tps(bandwidth_gbs: float, shape: Shape, depth: int = DEPTH) -> float:
    """The bandwidth bound on decode speed: 51.2 GB/s over 1.9 GB per token -> about 27 t/s."""
    return bandwidth_gbs * 1e9 / shape.bytes_per_token(depth)


def published_check() -> list[dict]:
    """Each published phone figure against the roofline, and predicted from the others.

    `efficiency` is measured decode / roofline; `projected_tps` uses the median efficiency of
    all the *other* rows (leave one out), so `error` is what the projection would have missed.
    """
    rows = []
    for m in devices()["measurements"]:
        dev = device(m["device"])
        shape = shape_of_published(m)
        roof = roofline_tps(dev["bandwidth_gbs"], shape)
        rows.append(
            {
                "device": m["device"],
                "model": shape.name,
                "threads": m["threads"],
                "bytes_per_token_mb": shape.bytes_per_token() / MB,
                "bandwidth_gbs": dev["bandwidth_gbs"],
                "roofline_tps": roof,
                "measured_tps": m["tg_tps"],
                "efficiency": m["tg_tps"] / roof,
            }
        )
    for i, r in enumerate(rows):
        others = statistics.median(x["efficiency"] for j, x in enumerate(rows) if j != i)
        r["projected_tps"] = others * r["roofline_tps"]
        r["error"] = r["projected_tps"] / r["measured_tps"] - 1
    return rows


def loo_error(rows: list[dict] | None = None) -> dict:
    """How far the leave-one-out projection missed the published figures: the median and the
    largest absolute error, and how many figures (published_check() rows, or those given)."""
    errors = [abs(r["error"]) for r in (rows if rows is not None else published_check())]
    return {"median": statistics.median(errors), "max": max(errors), "n": len(errors)}


def band(projected_tps: float, error: float) -> tuple[float, float]:
    """The speeds a projection is consistent with when it misses by up to `error` either way.

    The error is projected / measured - 1, so the measured speed is projected / (1 + error):
    `band(5.41, 0.22)` -> (4.43, 6.94). An error of 100 % or more leaves no upper bound (inf).
    """
    high = projected_tps / (1 - error) if error < 1 else float("inf")
    return projected_tps / (1 + error), high


def phone_efficiency() -> float:
    """The median share of the theoretical bandwidth roofline that published phones reach."""
    return statistics.median(r["efficiency"] for r in published_check())


def project(shape: Shape, device_id: str = "galaxy-s21", efficiency: float | None = None) -> dict:
    """Projected decode speed of a model on a device profile."""
    dev = device(device_id)
    eff = phone_efficiency() if efficiency is None else efficiency
    roof = roofline_tps(dev["bandwidth_gbs"], shape)
    return {
        "device": device_id,
        "model": shape.name,
        "bytes_per_token_mb": shape.bytes_per_token() / MB,
        "roofline_tps": roof,
        "efficiency": eff,
        "projected_tps": eff * roof,
    }


def machine_roofline(info, tg_tps: float, bandwidth_gbs: float) -> dict:
    """This machine's measured decode speed against its measured read bandwidth."""
    shape = shape_of(info)
    roof = roofline_tps(bandwidth_gbs, shape)
    return {
        "model": shape.name,
        "bandwidth_gbs": bandwidth_gbs,
        "bytes_per_token_mb": shape.bytes_per_token() / MB,
        "roofline_tps": roof,
        "measured_tps": tg_tps,
        "efficiency": tg_tps / roof,
    }


def machine_rows(files, bench_rows: list[dict], threads: int, bandwidth_gbs: float) -> list[dict]:
    """machine_roofline() for each file, with the kit's measured tg from research.measure.bench rows."""
    from research.models.gguf import read_gguf

    out = []
    for f in files:
        path = str(Path(f).resolve())
        tg = next(
            r["avg_ts"]
            for r in bench_rows
            if r["backend"] == "kit"
            and r["test"].startswith("tg")
            and r["n_threads"] == threads
            and str(Path(r["model_filename"]).resolve()) == path
        )
        out.append(machine_roofline(read_gguf(path), tg, bandwidth_gbs))
    return out


def format_machine(rows: list[dict]) -> str:
    """This machine's decode speeds against its bandwidth roofline, one line a file."""
    return "\n".join(
        f"{r['model'][:36]:36} {r['bytes_per_token_mb']:6.0f} MB/token roofline {r['roofline_tps']:6.0f} t/s "
        f"measured {r['measured_tps']:6.1f} = {r['efficiency']:.0%} of it"
        for r in rows
    )


def format_check(rows: list[dict]) -> str:
    """The published-figure check as a table, with the median absolute error last."""
    lines = [
        f"{'device':20} {'model':34} {'MB/token':>8} {'GB/s':>5} {'roofline':>8} {'measured':>8} "
        f"{'eff':>5} {'projected':>9} {'error':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['device']:20} {r['model'][:34]:34} {r['bytes_per_token_mb']:8.0f} {r['bandwidth_gbs']:5.1f} "
            f"{r['roofline_tps']:8.1f} {r['measured_tps']:8.1f} {r['efficiency']:5.0%} "
            f"{r['projected_tps']:9.1f} {r['error']:+7.0%}"
        )
    mae = statistics.median(abs(r["error"]) for r in rows)
    lines.append(f"median absolute error of the leave-one-out projection: {mae:.0%} over {len(rows)} figures")
    return "\n".join(lines)

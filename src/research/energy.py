"""Energy per answer: CPU-seconds always, joules where the device exposes an energy counter.

CPU time (the process's user + system time over an answer, all its threads) is what the answer
cost the processor, on every device, and compares models, quantizations and thread counts on
one device. Joules need a counter: Linux's RAPL (powercap: package energy of Intel and recent
AMD CPUs, root-readable on newer kernels) or, on Android, the battery's charge counter with its
voltage (coarse: the counter often moves in steps of 0.1-1 mAh, so short answers can read 0).
Where neither can be read, the kit says so instead of guessing.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Meter:
    """Cumulative energy counters: read() gives joules since some origin, one value a counter
    (a RAPL package each; the battery's charge as energy); None when they cannot be read."""

    source: str  # "rapl", "battery" or "none"
    files: tuple[Path, ...] = ()
    wrap_j: tuple[float, ...] = ()  # RAPL counters wrap at max_energy_range_uj
    why: str = ""  # for "none": what was looked for

    def read(self) -> tuple[float, ...] | None:
        try:
            if self.source == "rapl":
                return tuple(int(f.read_text()) / 1e6 for f in self.files)
            if self.source == "battery":
                charge_uah, voltage_uv = (int(f.read_text()) for f in self.files)
                return (charge_uah * 1e-6 * 3600 * voltage_uv * 1e-6,)  # µAh x V -> J
        except (OSError, ValueError):
            return None
        return None

    def spent(self, before: tuple | None, after: tuple | None) -> float | None:
        """Joules between two readings, unwrapping each RAPL counter that passed its maximum."""
        if before is None or after is None:
            return None
        if self.source == "battery":
            return max(before[0] - after[0], 0.0)  # the charge counter goes down as it drains
        total = 0.0
        for a, b, wrap in zip(before, after, self.wrap_j, strict=True):
            delta = b - a
            if delta < 0:
                if not wrap:
                    return None
                delta += wrap
            total += delta
        return total


def find(root: str | Path = "/") -> Meter:
    """The energy counter this device exposes, or Meter("none") saying what was looked for."""
    root = Path(root)
    rapl = sorted((root / "sys/class/powercap").glob("intel-rapl:[0-9]*"))
    packages = [d for d in rapl if d.name.count(":") == 1 and (d / "energy_uj").is_file()]
    readable = [d for d in packages if _readable(d / "energy_uj")]
    if readable:
        wraps = tuple(_int(d / "max_energy_range_uj", 0) / 1e6 for d in readable)
        return Meter("rapl", tuple(d / "energy_uj" for d in readable), wraps)
    for supply in sorted((root / "sys/class/power_supply").glob("*")):
        if _text(supply / "type") != "Battery":
            continue
        charge, voltage = supply / "charge_counter", supply / "voltage_now"
        if _readable(charge) and _readable(voltage):
            return Meter("battery", (charge, voltage))
    if packages:
        why = "RAPL is there but not readable (root only on this kernel)"
    else:
        why = "no RAPL counter (/sys/class/powercap) and no battery charge counter"
    return Meter("none", why=why)


@functools.cache
def default() -> Meter:
    return find("/")


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(path: Path, default: int) -> int:
    text = _text(path)
    return int(text) if text.isdigit() else default


def _readable(path: Path) -> bool:
    return _text(path).lstrip("-").isdigit()


class Span:
    """CPU-seconds and joules over a stretch of work: `with Span() as s: ...; s.cpu_s, s.energy_j`."""

    def __init__(self, meter: Meter | None = None):
        self.meter = meter or default()
        self.cpu_s = 0.0
        self.energy_j: float | None = None

    def __enter__(self) -> Span:
        self._cpu = time.process_time()
        self._energy = self.meter.read()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.cpu_s = time.process_time() - self._cpu
        self.energy_j = self.meter.spent(self._energy, self.meter.read())

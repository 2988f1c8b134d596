"""The paper's speed claim ("interactive speed on a Galaxy S21"): projected from the roofline and
published runs, and decided by a phone owner's own llama-bench figure when one is given.

Split from research.paper.claims, whose Finding and verdict rules it uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from research.errors import KitError
from research.paper.claims import Finding
from research.selection import projection

#: Where the speed threshold comes from: the paper gives no figure for "interactive".
READING_SOURCE = (
    "the kit's threshold, not the paper's (it gives no figure): silent reading, 238 words a minute "
    "(Brysbaert 2019, J. Memory and Language 109), at about 1.33 tokens a word "
    "(research.selection.pareto.READING_TPS)"
)
#: The paper's phone (data/devices.yaml): a figure measured on it decides the speed claim.
PAPERS_PHONE = "galaxy-s21"


@dataclass(frozen=True)
class PhoneRun:
    """A phone owner's own llama-bench figures for Orca-Mini-3B Q5_0 (or a file of its shape)."""

    tg_tps: float  # llama-bench's tg128 t/s (decode)
    pp_tps: float | None = None  # llama-bench's pp512 t/s (prompt), if given
    phone: str = PAPERS_PHONE  # a data/devices.yaml id, or the phone's name


def phone_run(
    tg_tps: float | None, pp_tps: float | None = None, phone: str = PAPERS_PHONE
) -> PhoneRun | None:
    """A PhoneRun from a notebook's parameters (MY_PHONE_TG_TPS, ...), or None when none was entered:
    `phone_run(None)` -> None; `phone_run(6.1).phone` -> "galaxy-s21"."""
    if tg_tps is None:
        return None
    for name, v in (("tg", tg_tps), ("pp", pp_tps)):
        if v is not None and not (isinstance(v, (int, float)) and 0 < v < 10_000):
            raise KitError(
                f"your phone's {name} figure must be llama-bench's t/s, a number above 0 and below 10,000; "
                f"got {v!r}"
            )
    if not str(phone).strip():
        raise KitError("say which phone the figure was measured on (MY_PHONE: 'galaxy-s21' or its name)")
    return PhoneRun(float(tg_tps), None if pp_tps is None else float(pp_tps), str(phone).strip())


def is_papers_phone(phone: str) -> bool:
    """Whether a phone's name or id is the paper's Galaxy S21: `is_papers_phone("Samsung Galaxy S21")`
    -> True; `is_papers_phone("Galaxy S21 Ultra")` -> False (another phone, with another memory)."""

    return re.sub(r"[^a-z0-9]+", "-", phone.lower()).strip("-").removeprefix("samsung-") == PAPERS_PHONE


def paper_model_runs(check: list[dict]) -> list[dict]:
    """The published phone runs of the paper's own model (data/devices.yaml), each with its
    leave-one-out projection error from `check` (projection.published_check())."""
    out = []
    for m, c in zip(projection.devices()["measurements"], check, strict=True):
        if m["model"].lower().startswith("orca-mini"):
            lo, hi = m.get("tg_tps_range") or (m["tg_tps"], m["tg_tps"])
            name = projection.device(m["device"])["name"]
            out.append(m | {"name": name, "tg_lo": lo, "tg_hi": hi, "error": c["error"]})
    return out


def speed_finding(
    projected: float,
    threshold: float,
    check: list[dict],
    where: str,
    shaped_tps: float | None = None,
    shaped_source: str = "",
    phone: PhoneRun | None = None,
) -> Finding:
    """Interactive speed on the S21 against the kit's reading-speed threshold.

    A figure measured on an S21 (`phone`, a phone owner's llama-bench tg) decides: reproduced at or
    above the threshold, else contradicted. Without one, the projection (`projected`, its
    leave-one-out error over the published runs `check`: projection.published_check()) decides only
    when its whole median band lies on one side of the threshold; else "not decided". Shown beside
    it: the published runs of the paper's own model, the decode speed of a file of its shape on x86
    (`shaped_tps`, measured where `shaped_source` says), and a figure from another phone."""
    error = projection.loo_error(check)
    n_phones = len({r["device"] for r in check})
    lo, hi = projection.band(projected, error["median"])
    lo_max, hi_max = projection.band(projected, error["max"])
    margin = projected / threshold - 1
    kit = f"Q5_0 projected at {projected:.1f} t/s on the S21 (threshold {threshold:g} t/s, "
    kit += f"margin {margin:+.0%})"
    sources = [f"projection: {error['n']} published runs on {n_phones} phones in data/devices.yaml"]
    papers = paper_model_runs(check)
    for r in papers:
        kit += (
            f"; published: Orca-Mini-3B ({r['quant']} assumed) on a {r['name']}, "
            f"{r['tg_lo']:.1f}-{r['tg_hi']:.1f} t/s ({r['threads']} threads)"
        )
        sources.append(f"{r['name']}: {r['source']}")
    if shaped_tps is not None:
        kit += f"; a file of its shape on x86: {shaped_tps:.1f} t/s (llama-bench, not a phone)"
        sources.append(f"x86: {shaped_source}")
    if phone is not None:
        kit += f"; on {phone.phone}, entered by its owner: {phone.tg_tps:.1f} t/s decode"
        kit += f", {phone.pp_tps:.1f} t/s prompt" if phone.pp_tps is not None else ""
        sources.append(f"{phone.phone}: its owner's llama-bench (notebook 02's MY_PHONE_TG_TPS)")
    band = (
        f"projection {lo:.1f}-{hi:.1f} t/s at its median error ({error['median']:.0%}), "
        f"{lo_max:.1f}-{hi_max:.1f} at its largest ({error['max']:.0%}), leave-one-out over {error['n']} "
        f"published runs on {n_phones} phones, none an S21"
    )
    published = "".join(
        f" The one published run of the paper's own model, on a {r['name']} "
        f"({r['tg_lo']:.1f}-{r['tg_hi']:.1f} t/s, {r['tg_lo'] / threshold:.1f}-{r['tg_hi'] / threshold:.1f}x "
        f"the threshold), favours the paper; the projection misses it by {r['error']:+.0%}: either the run's "
        "unpublished details (quant, memory speed) differ from what data/devices.yaml assumes or phones "
        "differ more than the projection allows, and the run is a measurement where the projection is not."
        for r in papers
    )
    if phone is not None and is_papers_phone(phone.phone):
        ok = phone.tg_tps >= threshold
        verdict = "reproduced" if ok else "contradicted"
        why = (
            f"measured on a Galaxy S21: {phone.tg_tps:.1f} t/s decode is {'at or above' if ok else 'below'} "
            f"{threshold:g} t/s, {READING_SOURCE}"
        )
    else:
        other = (
            f" The figure from {phone.phone} is not an S21's: shown, it does not decide."
            if phone is not None
            else ""
        )
        if lo >= threshold:
            verdict, how = "consistent within error", "fast enough even at the slow end of the median band"
        elif hi < threshold:
            verdict, how = "contradicted", "too slow even at the fast end of the median band"
        else:
            verdict = "not decided"
            how = (
                f"a {margin:+.0%} margin against a {error['median']:.0%} median error: the band holds the "
                "threshold, so only a measurement on an S21 decides (llama-bench on the phone, entered in "
                "notebook 02's MY_PHONE_TG_TPS)"
            )
        why = f"projected, not measured: {how}; {threshold:g} t/s is {READING_SOURCE}.{published}{other}"
    return Finding("interactive-speed", kit, where, band, verdict, why, "; ".join(sources))

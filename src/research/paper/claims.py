"""The paper's claims, each set against what the kit measured or projected, with a verdict.

Fassold 2024 (arXiv 2404.15851) makes ten claims a reader can check. Each notebook computes
the evidence for its own claims from its own numbers and turns it into a Finding through the
rules here (one place for what "reproduced" or "consistent within error" means), shows them as
a table at its end and saves them (runs/claims/NN.json); research.paper.render assembles the saved
findings of a full run into docs/claims.md.

Every finding says where its figures were measured (`measured`): this machine in this run, a
record made elsewhere (its file, machine and date), a published source, or nowhere (projected).
Verdicts reason from measurements; a projection alone can only leave a claim undecided or say
that even its error band agrees or disagrees.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from research.engine import memory
from research.errors import KitError
from research.units import MB

#: "not decided": the evidence's error band holds both the claim and its opposite (a projection
#: 2 % above a threshold with a 22 % median error), so it is neither a match nor a contradiction.
VERDICTS = ("reproduced", "consistent within error", "not decided", "contradicted", "not testable here")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # what the paper says, in a line
    notebook: str  # the notebook that confronts it


CLAIMS = {
    c.id: c
    for c in (
        Claim("termux-build", "llama.cpp is built on the phone itself, in Termux (git, cmake, clang)", "01"),
        Claim("llama-cpp", "TensorFlow Lite was tried and dropped; llama.cpp runs the model", "01"),
        Claim("orca-mini-3b", "the model is Orca-Mini-3B (OpenLLaMA-3B base, 3.43 B parameters)", "02"),
        Claim("bits-per-weight", "quantized to about 5.6 bits per weight", "02"),
        Claim("ram", "it needs about 2.2 GB of RAM", "02"),
        Claim("interactive-speed", "it answers at interactive speed on a Galaxy S21", "02"),
        Claim("offline", "it answers on the device, offline: no network is needed", "03"),
        Claim("accurate", "it answers questions on politics, geography and history accurately", "03"),
        Claim("hallucinates", "it sometimes hallucinates", "03"),
        Claim("prompt-format", "Orca-Mini's prompt format: ### System: / ### User: / ### Response:", "03"),
    )
}

#: Orca-Mini-3B's prompt as its model card (pankajmathur/orca_mini_3b) builds it.
ORCA_CARD_PROMPT = "### System:\n{system}\n\n### User:\n{instruction}\n\n### Response:\n"
#: "About 2.2 GB": the paper does not say whether its GB is 10^9 or 2^30 bytes, so both readings,
#: each 0.1 either side, in the kit's MB (2^20 bytes, research.units).
PAPER_RAM_READINGS = {
    "GB": (2.1e9 / MB, 2.3e9 / MB),  # 2003-2193 MB
    "GiB": (2.1 * 2**30 / MB, 2.3 * 2**30 / MB),  # 2150-2355 MB
}
#: The band the RAM verdict uses: either reading, 2003-2355 MB.
PAPER_RAM_MB = (
    min(lo for lo, _ in PAPER_RAM_READINGS.values()),
    max(hi for _, hi in PAPER_RAM_READINGS.values()),
)
#: "About 5.6 bits per weight", to the one decimal the paper gives.
PAPER_BPW = (5.55, 5.65)
#: The kit's Python runtime (CPython with llama_cpp and NumPy imported, before any model), counted
#: in every peak the kit measures; llama-cli on a phone has none of it.
RUNTIME_MB = memory.RUNTIME_BYTES / MB
RUNTIME_SOURCE = "research.engine.memory.RUNTIME_BYTES, measured with CPython 3.11 on x86-64"


@dataclass(frozen=True)
class Finding:
    """One claim against the kit's evidence."""

    claim: str  # a CLAIMS id
    kit: str  # what the kit measured or projected, with its numbers
    where: str  # the notebook section or command that computes it
    band: str  # the evidence's error band
    verdict: str  # one of VERDICTS
    why: str = ""  # what the verdict rests on, or why it cannot be tested here
    measured: str = ""  # where the figures were measured: this_run(), recorded_in(), a source

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise KitError(f"unknown claim {self.claim!r}; known: {', '.join(CLAIMS)}")
        if self.verdict not in VERDICTS:
            raise KitError(f"unknown verdict {self.verdict!r}; choose from: {', '.join(VERDICTS)}")
        if not self.measured.strip():
            raise KitError(f"the finding on {self.claim!r} does not say where its figures were measured")


def this_run() -> str:
    """Where a figure this run measured comes from:
    "this machine (AMD EPYC, x86_64), this run (2026-12-07)"."""
    import platform
    import time

    from research import device

    return f"this machine ({device.cpu_info()}, {platform.machine()}), this run ({time.strftime('%Y-%m-%d')})"


def recorded_in(result: dict, path) -> str:
    """Where figures read from a record (research.paper.shaped's) come from: its file, machine,
    threads and date: "recorded in docs/results/x.json (AMD EPYC, x86-avx512, 2 threads,
    2026-11-30 03:15 UTC), not measured in this run"."""
    from research.paths import REPO_ROOT

    p = Path(path).resolve()
    shown = p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p
    m = result.get("machine", {})
    machine = [str(m[k]) for k in ("cpu", "cpu_kind") if m.get(k)]
    machine += [f"{m['threads']} threads"] if m.get("threads") else []
    when = result.get("measured_at", "date not recorded")
    return f"recorded in {shown} ({', '.join(machine + [when])}), not measured in this run"


#: Orca-Mini-3B's parameters, from its shape: shaped.n_params(**shaped.ORCA_MINI_3B), which
#: tests/test_paper.py checks (not imported here: research.paper.shaped pulls in the benchmarks).
ORCA_PARAMS = 3_426_473_600


def size_line(n_bytes: int, n_elements: int) -> str:
    """llama.cpp's load-log line for a model (llama-model-loader.cpp, print_info):
    `size_line(2395435328, 3426473600)` -> "file size = 2.23 GiB (5.59 BPW)"."""
    return f"file size = {n_bytes / 2**30:.2f} GiB ({n_bytes * 8 / n_elements:.2f} BPW)"


def bits_finding(
    published_bpw: float, measured_bpw: float | None, others: dict[str, float], where: str, measured: str
) -> Finding:
    """~5.6 bits/weight: the Q5_0 file's true bits per weight, from the published file size and
    (when measured) from the tensor types of a file of the same shape; `others`: {type: bpw};
    `measured`: where the file of its shape was made (recorded_in() or this_run())."""
    got = measured_bpw if measured_bpw is not None else published_bpw
    near = ", ".join(f"{t} {b:.2f}" for t, b in others.items())
    kit = f"Q5_0: {published_bpw:.2f} bits/weight from the published file" + (
        f", {measured_bpw:.2f} from the tensor types of a file of its shape"
        if measured_bpw is not None
        else ""
    )
    ok = PAPER_BPW[0] <= got <= PAPER_BPW[1]
    source = "published file: its size in data/models.yaml"
    if measured_bpw is not None:
        source += f"; file of its shape: {measured}"
    return Finding(
        "bits-per-weight",
        kit,
        where,
        "exact (bytes over parameters); the paper gives one decimal",
        "reproduced" if ok else "contradicted",
        f"the only legacy type at 5.6 (the others: {near}); llama.cpp prints it as "
        f"'{size_line(round(published_bpw * ORCA_PARAMS / 8), ORCA_PARAMS)}'",
        source,
    )


def _at(peaks: dict[int, float]) -> str:
    """`{512: 2479.2, 2048: 2967.8}` -> "2479 MB at 512 tokens, 2968 MB at 2048"."""
    parts = [f"{v:.0f} MB at {c}" for c, v in sorted(peaks.items())]
    return (parts[0] + " tokens" + "".join(", " + p for p in parts[1:])) if parts else "none"


def ram_band() -> str:
    """The paper's "about 2.2 GB" in the kit's MB, reading by reading."""
    (g_lo, g_hi), (i_lo, i_hi) = PAPER_RAM_READINGS["GB"], PAPER_RAM_READINGS["GiB"]
    return (
        f"'about 2.2 GB' read as 2.1-2.3 GB ({g_lo:.0f}-{g_hi:.0f} MB) or 2.1-2.3 GiB "
        f"({i_lo:.0f}-{i_hi:.0f} MB): {PAPER_RAM_MB[0]:.0f}-{PAPER_RAM_MB[1]:.0f} MB (MB = 2^20 bytes)"
    )


def ram_finding(
    peaks: dict[int, float],
    predicted: dict[int, float],
    file_mb: float,
    where: str,
    measured: str,
    model_errors: list[float] | None = None,
    runtime_mb: float | None = None,
) -> Finding:
    """~2.2 GB of RAM against the peak memory of Q5_0: `peaks` measured in a fresh process of the
    kit ({n_ctx: MB}, empty when not measured; `measured` says where), `predicted` for the phone by
    the memory model ({n_ctx: MB}). Both count the kit's Python runtime (`runtime_mb`), which
    llama-cli on a phone does not have: the verdict takes the engine's own memory, the peak less
    that runtime: `runtime_mb` when measured in the process of the peaks (before it loaded the model),
    else the kit's constant RUNTIME_MB. `model_errors`: the memory model's relative errors against the
    peaks measured on files of the paper model's shape ((predicted - measured) / measured), the band of
    the prediction."""
    lo, hi = PAPER_RAM_MB
    runtime_source = f"measured before loading, {measured}" if runtime_mb is not None else RUNTIME_SOURCE
    runtime_mb = RUNTIME_MB if runtime_mb is None else runtime_mb
    engine = {c: v - runtime_mb for c, v in peaks.items()}
    phone = {c: v - RUNTIME_MB for c, v in predicted.items()}  # the prediction holds the constant
    kit = (
        f"Q5_0, the kit's process at its peak (measured in a fresh process, files of its shape, random "
        f"weights): {_at(peaks)}; less the kit's Python runtime ({runtime_mb:.0f} MB, which llama-cli "
        f"does not have), the engine's own: {_at(engine)}; the engine's own predicted for the phone: "
        f"{_at(phone)}"
        if peaks
        else f"Q5_0, no peak measured; the engine's own predicted for the phone: {_at(phone)}"
    )
    band = ram_band() + "; "
    if model_errors:
        worst = max(abs(e) for e in model_errors)
        band += f"the memory model within {worst:.1%} of the {len(model_errors)} peaks measured on its shape"
    else:
        band += "the memory model not checked on this shape (no measured peaks)"
    hypothesis = (
        f"A hypothesis, not measured: the paper's 2.2 GB is the file, {file_mb:.0f} MB, which llama.cpp's "
        f"load log prints as '{size_line(round(file_mb * MB), ORCA_PARAMS)}': the weights without the KV "
        "cache and working memory"
    )
    if not engine:
        verdict = "not decided"
        why = "no peak was measured, and a prediction alone does not decide. " + hypothesis
    elif any(lo <= v <= hi for v in engine.values()):
        c = next(c for c, v in sorted(engine.items()) if lo <= v <= hi)
        verdict, why = (
            "consistent within error",
            f"at {c} tokens the engine's own peak is within {lo:.0f}-{hi:.0f} MB",
        )
    elif min(engine.values()) > hi:
        c = min(engine, key=engine.get)
        verdict = "contradicted"
        why = (
            f"even at {c} tokens of context the engine's own peak, without the kit's runtime, is "
            f"{engine[c]:.0f} MB: {engine[c] - hi:.0f} MB above 2.3 GiB, the top of either reading. "
            + hypothesis
        )
    elif max(engine.values()) < lo:
        verdict, why = (
            "contradicted",
            f"the engine's own peak stays below {lo:.0f} MB: it needs less than the paper says",
        )
    else:
        verdict, why = "not decided", "the peaks straddle the band without falling inside it"
    source = f"peaks: {measured}; runtime: {runtime_source}" if peaks else "nowhere: predicted only"
    return Finding("ram", kit, where, band, verdict, why, source + "; phone: predicted, not measured")


def offline_finding(audit: dict, where: str) -> Finding:
    """Offline: what the kit's commands tried to reach off this device under the network audit
    (research.offline.audited_run()). One attempt contradicts the claim; none reproduces it for
    the kit's commands on this machine."""
    n, procs = audit["attempts"], audit["processes"]
    kit = (
        f"{n} lookups or connections off loopback by {procs} Python processes running "
        + ", ".join(f"`{c}`" for c in audit["commands"])
        + " on the bundled model, under the test suite's network audit (which caught its probe first)"
    )
    if n:
        verdict, why = "contradicted", "the commands tried to reach " + ", ".join(audit["hosts"])
    else:
        verdict, why = (
            "reproduced",
            "for the kit's commands on this machine; not checked: llama-cli on a phone, and sockets that "
            "native code opens outside Python's socket module, which the audit does not see",
        )
    band = "a count: every Python process audited, children included; one attempt contradicts"
    return Finding(
        "offline", kit, where, band, verdict, why, f"this machine ({audit['machine']}), {audit['date']}"
    )


def answers_findings(
    summary: dict, papers_model: bool, model: str, where: str, measured: str
) -> list[Finding]:
    """Accurate answers and hallucinations on the paper's three topics (a research.evaluation.run
    summary of those questions). Testable only on the paper's model: other models' figures are
    shown, with the verdict "not testable here". On Orca-Mini the rules are: "accurate" when the
    95 % interval of answers containing a reference lies above 50 %; "sometimes hallucinates" when
    the interval of confident wrong answers lies above 0 and below 50 %. `measured`: where the
    answers were made (this_run())."""
    (c_lo, c_hi), (h_lo, h_hi) = summary["contains_ci"], summary["hallucinated_ci"]
    n = summary["n"]
    acc = f"{model}: {summary['contains']:.0%} of {n} answers contain a reference"
    hal = f"{model}: {summary['hallucinated']:.0%} of {n} answers are confident and contain no reference"
    acc_band, hal_band = f"95 % interval {c_lo:.0%}-{c_hi:.0%}", f"95 % interval {h_lo:.0%}-{h_hi:.0%}"
    if not papers_model:
        why = (
            "Orca-Mini-3B's weights are not on this machine; the figures are the bundled model's on the "
            "paper's protocol. With the file: run notebook 03 with MODEL = 'orca-mini-3b-q5_0'"
        )
        return [
            Finding("accurate", acc, where, acc_band, "not testable here", why, measured),
            Finding("hallucinates", hal, where, hal_band, "not testable here", why, measured),
        ]
    acc_v = "reproduced" if c_lo > 0.5 else "contradicted" if c_hi < 0.5 else "consistent within error"
    hal_v = (
        "reproduced"
        if 0 < h_lo and h_hi < 0.5
        else "contradicted"
        if h_hi == 0 or h_lo >= 0.5
        else "consistent within error"
    )
    return [
        Finding(
            "accurate",
            acc,
            where,
            acc_band,
            acc_v,
            "rule: the interval above 50 % (the paper rated by hand)",
            measured,
        ),
        Finding(
            "hallucinates", hal, where, hal_band, hal_v, "rule: the interval above 0 and below 50 %", measured
        ),
    ]


def table(findings: list[Finding], brief: bool = False) -> str:
    """Findings as a Markdown table, in the order of CLAIMS; `brief`: what the paper says, the
    kit's evidence, where it was measured, the verdict and where it is computed (the README's),
    without band and reasons."""
    order = list(CLAIMS)
    if brief:
        head = "| the paper says | the kit measured or projected | measured on | verdict | computed in |"
    else:
        head = (
            "| claim | the paper says | the kit measured or projected | measured on | computed in "
            "| error band | verdict |"
        )
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for f in sorted(findings, key=lambda f: order.index(f.claim)):
        if brief:
            cells = (CLAIMS[f.claim].paper, f.kit, f.measured, f"**{f.verdict}**", f.where)
        else:
            why = f" ({f.why})" if f.why else ""
            cells = (
                f.claim,
                CLAIMS[f.claim].paper,
                f.kit,
                f.measured,
                f.where,
                f.band,
                f"**{f.verdict}**{why}",
            )
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def claims_dir() -> Path:
    """Where notebooks save their findings: runs/claims in the checkout (git-ignored)."""
    from research.paths import REPO_ROOT

    return REPO_ROOT / "runs" / "claims"


def save(findings: list[Finding], notebook: str, folder=None) -> Path:
    """Save one notebook's findings as JSON (folder default: claims_dir()); returns the path."""
    path = Path(folder or claims_dir()) / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(f) for f in findings], indent=1))
    return path


def load(folder=None) -> list[Finding]:
    """Every saved finding (folder default: claims_dir()), in the order of CLAIMS."""
    out = []
    for path in sorted(Path(folder or claims_dir()).glob("*.json")):
        out += [Finding(**d) for d in json.loads(path.read_text())]
    order = list(CLAIMS)
    return sorted(out, key=lambda f: order.index(f.claim))

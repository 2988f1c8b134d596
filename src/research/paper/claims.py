"""The paper's claims, each set against what the kit measured or projected, with a verdict.

Fassold 2024 (arXiv 2404.15851) makes nine claims a reader can check. Each notebook computes
the evidence for its own claims from its own numbers and turns it into a Finding through the
rules here (one place for what "reproduced" or "consistent within error" means), shows them as
a table at its end and saves them (runs/claims/NN.json); research.paper.render assembles the saved
findings of a full run into docs/claims.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from research.errors import KitError
from research.selection import projection
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
        Claim("accurate", "it answers questions on politics, geography and history accurately", "03"),
        Claim("hallucinates", "it sometimes hallucinates", "03"),
        Claim("prompt-format", "Orca-Mini's prompt format: ### System: / ### User: / ### Response:", "03"),
    )
}

#: Orca-Mini-3B's prompt as its model card (pankajmathur/orca_mini_3b) builds it.
ORCA_CARD_PROMPT = "### System:\n{system}\n\n### User:\n{instruction}\n\n### Response:\n"
#: "About 2.2 GB": 2.1 GB (10^9 bytes) to 2.3 GiB (2^30), since the paper does not say which.
PAPER_RAM_MB = (2.1e9 / MB, 2.3 * 1024)
#: "About 5.6 bits per weight", to the one decimal the paper gives.
PAPER_BPW = (5.55, 5.65)


@dataclass(frozen=True)
class Finding:
    """One claim against the kit's evidence."""

    claim: str  # a CLAIMS id
    kit: str  # what the kit measured or projected, with its numbers
    where: str  # the notebook section or command that computes it
    band: str  # the evidence's error band
    verdict: str  # one of VERDICTS
    why: str = ""  # what the verdict rests on, or why it cannot be tested here

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise KitError(f"unknown claim {self.claim!r}; known: {', '.join(CLAIMS)}")
        if self.verdict not in VERDICTS:
            raise KitError(f"unknown verdict {self.verdict!r}; choose from: {', '.join(VERDICTS)}")


#: Orca-Mini-3B's parameters, from its shape: shaped.n_params(**shaped.ORCA_MINI_3B), which
#: tests/test_paper.py checks (not imported here: research.paper.shaped pulls in the benchmarks).
ORCA_PARAMS = 3_426_473_600


def size_line(n_bytes: int, n_elements: int) -> str:
    """llama.cpp's load-log line for a model (llama-model-loader.cpp, print_info):
    `size_line(2395435328, 3426473600)` -> "file size = 2.23 GiB (5.59 BPW)"."""
    return f"file size = {n_bytes / 2**30:.2f} GiB ({n_bytes * 8 / n_elements:.2f} BPW)"


def bits_finding(
    published_bpw: float, measured_bpw: float | None, others: dict[str, float], where: str
) -> Finding:
    """~5.6 bits/weight: the Q5_0 file's true bits per weight, from the published file size and
    (when measured) from the tensor types of a file of the same shape; `others`: {type: bpw}."""
    got = measured_bpw if measured_bpw is not None else published_bpw
    near = ", ".join(f"{t} {b:.2f}" for t, b in others.items())
    kit = f"Q5_0: {published_bpw:.2f} bits/weight from the published file" + (
        f", {measured_bpw:.2f} from the tensor types of a file of its shape"
        if measured_bpw is not None
        else ""
    )
    ok = PAPER_BPW[0] <= got <= PAPER_BPW[1]
    return Finding(
        "bits-per-weight",
        kit,
        where,
        "exact (bytes over parameters); the paper gives one decimal",
        "reproduced" if ok else "contradicted",
        f"the only legacy type at 5.6 (the others: {near}); llama.cpp prints it as "
        f"'{size_line(round(published_bpw * ORCA_PARAMS / 8), ORCA_PARAMS)}'",
    )


def ram_finding(
    measured: dict[int, float],
    predicted: dict[int, float],
    file_mb: float,
    where: str,
    model_errors: list[float] | None = None,
) -> Finding:
    """~2.2 GB of RAM against the peak memory of Q5_0, measured here at each context
    ({n_ctx: MB}, empty when not measured) or predicted for the phone ({n_ctx: MB}).
    `model_errors`: the memory model's relative errors against the peaks measured here on files
    of the paper model's shape ((predicted - measured) / measured), the band of the prediction."""
    lo, hi = PAPER_RAM_MB
    base = measured or predicted
    what = (
        "measured here in a fresh process (random weights, same shape)"
        if measured
        else "predicted for the phone"
    )
    kit = (
        "Q5_0 peak " + ", ".join(f"{v:.0f} MB at {c} tokens" for c, v in sorted(base.items())) + f" ({what})"
    )
    if measured:
        kit += "; predicted for the phone " + ", ".join(
            f"{v:.0f} MB at {c}" for c, v in sorted(predicted.items())
        )
    smallest = min(base.values())
    if smallest <= hi:
        verdict, why = (
            "consistent within error",
            f"at {min(base, key=base.get)} tokens the peak is within {lo:.0f}-{hi:.0f} MB",
        )
    else:
        verdict = "contradicted"
        why = (
            f"even at {min(base, key=base.get)} tokens of context the peak is {smallest - hi:.0f} MB above "
            "2.3 GiB. "
            f"2.2 GB is the file ({file_mb:.0f} MB; llama.cpp's load log prints "
            f"'{size_line(round(file_mb * MB), ORCA_PARAMS)}'): the weights alone, without the KV cache "
            "and working memory the process adds"
        )
    band = f"paper 'about 2.2 GB' read as {lo:.0f}-{hi:.0f} MB; "
    if model_errors:
        worst = max(abs(e) for e in model_errors)
        band += f"the memory model within {worst:.1%} of the {len(model_errors)} peaks measured here "
        band += "on its shape"
    else:
        band += "the memory model not checked on this shape here (no measured peaks)"
    return Finding("ram", kit, where, band, verdict, why)


def speed_finding(
    projected: float, threshold: float, error: dict, where: str, measured_here: float | None = None
) -> Finding:
    """Interactive speed on the S21: a projection and its leave-one-out error against the
    reading-speed threshold. `error`: research.selection.projection.loo_error(). The projection is never a
    match by itself: the verdict says whether the threshold lies inside its error band."""
    lo, hi = projection.band(projected, error["median"])
    lo_max, hi_max = projection.band(projected, error["max"])
    margin = projected / threshold - 1
    kit = f"Q5_0 projected at {projected:.1f} t/s on the S21 (threshold {threshold:g}, margin {margin:+.0%})"
    if measured_here is not None:
        kit += f"; measured here {measured_here:.1f} t/s (x86, 2 threads: not a phone)"
    band = (
        f"{lo:.1f}-{hi:.1f} t/s at the median error ({error['median']:.0%}), "
        f"{lo_max:.1f}-{hi_max:.1f} at the largest ({error['max']:.0%}), over {error['n']} published phones"
    )
    if lo >= threshold:
        verdict, why = (
            "consistent within error",
            "fast enough even at the slow end of the median band (projected, not measured)",
        )
    elif hi < threshold:
        verdict, why = (
            "contradicted",
            "too slow even at the fast end of the median band (projected, not measured)",
        )
    else:
        verdict = "not decided"
        why = (
            f"a {margin:+.0%} margin against a {error['median']:.0%} median error; the band "
            "holds the threshold, so only a measurement on an S21 (notebook 01's llama-bench) decides"
        )
    return Finding("interactive-speed", kit, where, band, verdict, why)


def answers_findings(summary: dict, papers_model: bool, model: str, where: str) -> list[Finding]:
    """Accurate answers and hallucinations on the paper's three topics (a research.evaluation.run
    summary of those questions). Testable only on the paper's model: other models' figures are
    shown, with the verdict "not testable here". On Orca-Mini the rules are: "accurate" when the
    95 % interval of answers containing a reference lies above 50 %; "sometimes hallucinates" when
    the interval of confident wrong answers lies above 0 and below 50 %."""
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
            Finding("accurate", acc, where, acc_band, "not testable here", why),
            Finding("hallucinates", hal, where, hal_band, "not testable here", why),
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
            "accurate", acc, where, acc_band, acc_v, "rule: the interval above 50 % (the paper rated by hand)"
        ),
        Finding("hallucinates", hal, where, hal_band, hal_v, "rule: the interval above 0 and below 50 %"),
    ]


def table(findings: list[Finding], brief: bool = False) -> str:
    """Findings as a Markdown table, in the order of CLAIMS; `brief`: what the paper says, the
    kit's evidence, the verdict and where it is computed (the README's), without band and reasons."""
    order = list(CLAIMS)
    if brief:
        head = "| the paper says | the kit measured or projected | verdict | computed in |"
    else:
        head = "| claim | the paper says | the kit measured or projected | where | error band | verdict |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for f in sorted(findings, key=lambda f: order.index(f.claim)):
        if brief:
            cells = (CLAIMS[f.claim].paper, f.kit, f"**{f.verdict}**", f.where)
        else:
            why = f" ({f.why})" if f.why else ""
            cells = (f.claim, CLAIMS[f.claim].paper, f.kit, f.where, f.band, f"**{f.verdict}**{why}")
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

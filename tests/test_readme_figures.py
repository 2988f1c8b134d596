"""Figures written in prose (README.md, docs/) against the rendered output they describe
(docs/results, made by `make results`) and the files they measure: change a number in one and not
the other, and a test here fails. Every size is in the kit's MB (research.units: 2^20 bytes)."""

import re

import pytest

from research import paths
from research.models.catalog import resolve
from research.models.gguf import read_gguf
from research.paper import claims as paper
from research.paper import render
from research.units import MB

ROOT = paths.REPO_ROOT
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"


def _text(path) -> str:
    """A document's text with its lines joined, so a figure may be wrapped anywhere."""
    return re.sub(r"\s*\n\s*", " ", path.read_text())


def _quantize_table(text: str) -> dict[str, tuple[float, float]]:
    """`research quantize`'s table as notebook 02 printed it: {type: (size MB, bits/weight)}."""
    block = text.split("type      size MB  bits/w", 1)[1]
    rows = re.findall(r"^ {4}(\w+) +(\d+\.\d) +(\d+\.\d\d) ", block, re.M)
    return {t: (float(mb), float(bpw)) for t, mb, bpw in rows if t != "source"}


def _readme_ladder() -> dict[str, tuple[float, float]]:
    """The README's ladder table (Choosing a quantization): {type: (file MB, bits/weight)}."""
    block = README.read_text().split("| type | file MB | bits/w |", 1)[1]
    rows = re.findall(r"^\| (\w+)(?: \(source\))? \| (\d+\.\d) \| (\d+\.\d\d) \|", block, re.M)
    return {t: (float(mb), float(bpw)) for t, mb, bpw in rows}


def test_the_readme_ladder_s_sizes_are_the_rendered_notebook_s():
    rendered = _quantize_table((RESULTS / "02_model_selection.md").read_text())
    readme = _readme_ladder()
    shared = sorted(set(rendered) & set(readme))
    assert len(readme) == 8 and len(shared) >= 4, (readme, rendered)
    for t in shared:
        assert readme[t] == rendered[t], (
            f"README's {t} row says {readme[t]}, notebook 02 printed {rendered[t]}"
        )


def test_every_readme_ladder_size_is_in_the_kit_s_mb():
    """The rows notebook 02's CI ladder does not make, checked against the bundled file: every file
    of the ladder holds the same header besides its tensors (bits/weight x parameters), so each
    row's MB less its tensors must be the bundled file's header. A size in decimal MB is ~5 % off."""
    info = read_gguf(resolve(None).path)
    header_mb = (info.file_size - sum(t.n_bytes for t in info.tensors)) / MB
    for t, (file_mb, bpw) in _readme_ladder().items():
        tensors_mb = bpw * info.n_params / 8 / MB
        # Rounding: 0.05 MB on the size, 0.005 bits/weight over 134.5 M parameters is 0.08 MB.
        assert file_mb - tensors_mb == pytest.approx(header_mb, abs=0.15), f"{t}: {file_mb} MB"


def test_the_bundled_model_s_size_in_prose_is_its_file_s():
    size = resolve(None).path.stat().st_size / MB
    said = []
    for doc in (README, ROOT / "docs" / "workshop.md", ROOT / "docs" / "android.md"):
        text = _text(doc)
        said += re.findall(r"SmolLM2-135M[\w -]*?\((\d+) MB\)", text)
        said += re.findall(r"the bundled (\d+) MB model", text)
        said += re.findall(r"of the (\d+) MB file", text)
    assert len(said) >= 4
    assert {int(s) for s in said} == {round(size)}, f"the bundled file is {size:.1f} MB; prose says {said}"


def test_the_readme_s_phone_projection_is_the_rendered_notebook_s():
    rendered = (RESULTS / "02_model_selection.md").read_text()
    text = _text(README)
    # The leave-one-out check of the published runs.
    n_runs = int(re.search(r"error of the leave-one-out projection: \d+% over (\d+) figures", rendered)[1])
    median = re.search(r"error of the leave-one-out projection: (\d+)%", rendered)[1]
    largest = re.search(r"largest absolute error: (\d+)%", rendered)[1]
    phones = set(re.findall(r"^ {4}([a-z0-9-]+) +\S.* [+-]\d+%$", rendered, re.M))
    said = re.search(
        r"in (\d+) published llama\.cpp runs on (\d+) phones.*? misses by (\d+) % \(median\) "
        r"and (\d+) % \(worst\)",
        text,
    )
    assert said, "README's projection sentence is not where this test looks for it"
    assert said.groups() == (str(n_runs), str(len(phones)), median, largest)
    effs = [int(e) for e in re.findall(r"^ {4}[a-z0-9-]+ .* (\d+)% +\d+\.\d +[+-]\d+%$", rendered, re.M)]
    assert re.search(rf"Phones reach {min(effs)}-{max(effs)} % of their theoretical", text)
    # Orca-Mini-3B on the S21, at the 2048-token context.
    table = rendered.split("**At a 2048-token context**", 1)[1]
    tps = dict(re.findall(r"^\| (Q\d_\d) \| \d+ \| [\d.]+ \| \w+ \| \d+ \| (\d+\.\d) \|", table, re.M))
    said = re.search(
        r"decodes at (\S+) \(Q4_0\), (\S+) \(Q4_1\), (\S+) \(Q5_0, 5\.6 bits/weight\) and (\S+) t/s \(Q8_0\)",
        text,
    )
    assert said and said.groups() == (tps["Q4_0"], tps["Q4_1"], tps["Q5_0"], tps["Q8_0"])


def test_docs_claims_is_what_the_committed_findings_render(tmp_path):
    findings = paper.load(RESULTS / "claims")
    rendered = render.write_claims(tmp_path / "claims.md", findings).read_text()
    assert (ROOT / "docs" / "claims.md").read_text() == rendered, (
        "docs/claims.md differs from docs/results/claims: run `make results` (or render.write_claims)"
    )


def test_the_readme_s_cross_validated_confidence_rows_are_the_shipped_calibration_s():
    """README, "Confidence on questions unlike the kit's": each set's share right and the
    three-set calibration's held-out mean confidence and AUROC there are those the shipped
    calibration of the page's method recorded (its held_out.by_set)."""
    import json

    from research.confidence import DEFAULT

    folder = ROOT / "data" / "calibrations"
    (cal_file,) = folder.glob(f"*/{DEFAULT}.json")
    by_set = json.loads(cal_file.read_text())["held_out"]["by_set"]
    text = README.read_text()
    labels = {"longtail": "data/longtail", "heldout": "data/heldout", "qa": "the kit's 310"}
    for name, b in by_set.items():
        head = f"| {labels[name]} ({b['accuracy'] * 100:.1f} %) |"
        assert head in text, head
        row = text.split(head, 1)[1].split("\n", 2)[1]
        want = f"| | three sets, 5-fold cross-validated | {b['mean_p'] * 100:.1f} % | {b['auroc']:.2f} |"
        assert row.startswith(want), (row, want)

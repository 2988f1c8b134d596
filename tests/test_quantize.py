"""The quantization ladder: real files written by llama.cpp, checked from their headers."""

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import tiny_gguf
from test_cli import ROOT, assert_one_line_error, run

from research.errors import KitError
from research.models import quantize
from research.models.catalog import resolve
from research.models.gguf import read_gguf

LOG = (
    "[  12/ 272]  blk.0.attn_q.weight - [  576,   576,     1,     1], type =   q4_1, converting to q4_K .. "
    "warning: blk.0.attn_q.weight            - ncols    576 not divisible by 256 (required for type    q4_K) "
    "-> falling back to    q5_0\n"
    "warning: output.weight                  - ncols    576 not divisible by 256 (required for type    q6_K) "
    "-> falling back to    q8_0\n"
    "warning: blk.1.attn_q.weight            - ncols    576 not divisible by 256 (required for type    q4_K) "
    "(WARNING: must use F16 due to unusual shape) -> falling back to     f16\n"
)


def test_types_are_found_in_any_case_and_by_alias():
    assert quantize.quant_type("q4_k").name == "Q4_K_M"
    assert quantize.quant_type(" f16 ").name == "F16"
    assert [t.name for t in quantize.parse_types("Q8_0, q4_0,Q8_0,")] == ["Q8_0", "Q4_0"]
    with pytest.raises(KitError, match="unknown quantization type 'Q4_7'.*Q4_0, Q4_1"):
        quantize.quant_type("Q4_7")
    with pytest.raises(KitError, match="no quantization type"):
        quantize.parse_types(" , ")


def test_output_names_replace_the_source_type():
    q8 = quantize.TYPES["Q8_0"]
    assert (
        quantize.output_name(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), q8) == "SmolLM2-135M-Instruct.Q8_0.gguf"
    )
    assert quantize.output_name(Path("orca-mini-3b-q4_k_m.gguf"), q8) == "orca-mini-3b.Q8_0.gguf"
    assert quantize.output_name(Path("model.gguf"), q8) == "model.Q8_0.gguf"


def test_fallbacks_are_read_from_llama_cpps_log():
    assert quantize.parse_fallbacks(LOG) == {"q4_K -> q5_0": 1, "q6_K -> q8_0": 1, "q4_K -> f16": 1}
    assert quantize.parse_fallbacks("nothing here") == {}


def test_a_file_that_is_not_gguf_is_refused_before_any_work(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello " * 100)
    with pytest.raises(KitError, match="not a GGUF"):
        quantize.quantize(bad, "Q4_0", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unloadable_model_fails_in_the_child_and_leaves_nothing(tmp_path):
    src = tmp_path / "tiny.gguf"
    tiny_gguf(src)  # a valid header, but no model llama.cpp can quantize
    with pytest.raises(KitError, match="quantizing to Q4_0 failed: .*partial file was removed"):
        quantize.quantize(src, "Q4_0", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.model
def test_a_ladder_of_the_bundled_model_reports_true_sizes_and_fallbacks(tmp_path):
    results = quantize.quantize(None, "Q4_0,Q4_K_M", tmp_path, progress=lambda s: None)
    q4_0, q4_k = results
    for r in results:
        info = read_gguf(r.path)
        assert r.size_bytes == r.path.stat().st_size == info.file_size
        assert r.bits_per_weight == pytest.approx(info.bits_per_weight)
        assert info.file_type_name == r.type
    assert q4_0.size_bytes < resolve(None).path.stat().st_size  # below the Q4_1 source
    assert 4.5 < q4_0.bits_per_weight < 6  # Q4_0 blocks plus a Q8_0 output matrix
    # SmolLM2's rows are 576 wide: most of Q4_K_M's tensors cannot be k-quants.
    assert q4_k.fallbacks.get("q4_K -> q5_0", 0) > 100 and q4_k.n_fallback > q4_k.n_tensors / 2
    assert "Q5_0" in q4_k.type_mix and q4_k.type_mix["Q5_0"] > q4_k.type_mix.get("Q4_K", 0)
    table = quantize.format_table(results, resolve(None).path)
    assert "q4_K -> q5_0" in table and "source" in table
    # A second run reuses the files, and still knows their fallbacks.
    again = quantize.quantize(None, ["q4_k"], tmp_path, progress=lambda s: None)
    assert again[0].reused and again[0].fallbacks == q4_k.fallbacks


@pytest.mark.model
def test_upcasting_is_refused_unless_asked(tmp_path):
    with pytest.raises(KitError, match=r"already Q4_1 \(5 bits/weight\): Q5_0, Q8_0 .*--allow-upcast"):
        quantize.quantize(None, "Q4_0,Q5_0,Q8_0", tmp_path, progress=lambda s: None)
    assert list(tmp_path.iterdir()) == []  # refused before the first file, not halfway
    [q8] = quantize.quantize(None, "Q8_0", tmp_path, allow_upcast=True, progress=lambda s: None)
    assert 8.4 < q8.bits_per_weight < 8.6 and not q8.fallbacks


@pytest.mark.model
def test_too_little_disk_space_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(quantize.shutil, "disk_usage", lambda p: type("U", (), {"free": 10 << 20})())
    with pytest.raises(KitError, match=r"Q4_0 needs up to \d+ MB but .* has 10 MB free"):
        quantize.quantize(None, "Q4_0", tmp_path, progress=lambda s: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_a_write_cut_short_removes_the_partial_file(tmp_path):
    """The file-size limit stops llama.cpp mid-write, as a full disk would."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, 20 << 20))

    r = subprocess.run(
        [sys.executable, "-m", "research", "quantize", "--types", "Q4_0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=limit,
        timeout=300,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: quantizing to Q4_0 failed: writing SmolLM2-135M-Instruct.Q4_0.gguf.part")
    assert "disk full" in last and last.endswith("the partial file was removed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_quantize_command_prints_the_table_and_json(tmp_path):
    r = run("quantize", "--types", "q4_0", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    import json

    [row] = json.loads(r.stdout)
    assert row["type"] == "Q4_0" and Path(row["path"]).is_file() and row["size_mb"] > 50
    r = run("quantize", "--types", "Q9_9", "--out", str(tmp_path))
    assert_one_line_error(r, "unknown quantization type 'Q9_9'")
    r = run("quantize", "--types", "Q8_0", "--out", str(tmp_path))
    assert_one_line_error(r, "--allow-upcast")
    a_file = tmp_path / "taken"
    a_file.write_text("")
    r = run("quantize", "--types", "Q4_0", "--out", str(a_file))
    assert_one_line_error(r, f"cannot use {a_file} as the output folder")

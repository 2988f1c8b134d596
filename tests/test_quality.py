"""Perplexity and KL divergence: the math without weights, then the real model against llama-perplexity."""

import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from research.errors import KitError
from research.measure import quality

QUIET = {"progress": lambda s: None}

# --- the math, no weights ---------------------------------------------------------------------


def test_log_softmax_is_normalised_and_stable():
    assert np.allclose(quality.log_softmax(np.zeros((1, 2), np.float32)), math.log(0.5))
    logits = np.random.default_rng(0).normal(0, 5, (4, 1000)).astype(np.float32) + 1000  # exp() overflows
    lp = quality.log_softmax(logits)
    x = logits.astype(np.float64)
    expected = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    assert lp.dtype == np.float32 and np.allclose(lp, expected, atol=1e-4)
    assert np.allclose(np.exp(lp.astype(np.float64)).sum(1), 1, atol=1e-5)


def test_kl_divergence_known_values():
    p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    assert quality.kl_divergence(p, q)[0] == pytest.approx(0.5 * math.log(25 / 9))  # 0.5108
    assert quality.kl_divergence(q, p)[0] == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    lp = quality.log_softmax(np.random.default_rng(1).normal(0, 3, (8, 500)).astype(np.float32))
    assert np.allclose(quality.kl_divergence(lp, lp), 0)
    other = quality.log_softmax(lp + np.random.default_rng(2).normal(0, 1, lp.shape).astype(np.float32))
    assert np.all(quality.kl_divergence(lp, other) > 0)


def test_pack_round_trip_keeps_log_probs_to_a_fraction_of_a_step():
    lp = quality.log_softmax(np.random.default_rng(3).normal(0, 4, (16, 3000)).astype(np.float32))
    codes, rows = quality.pack(lp)
    assert codes.dtype == np.uint16 and rows.shape == (16, 2) and np.all(codes.max(1) == 65535)
    back, scale = quality.unpack(codes, rows), rows[:, :1]
    above = lp > lp.max(1, keepdims=True) - quality.FLOOR
    assert np.all(np.abs(back - lp)[above] <= (scale / 2 + 1e-5).repeat(lp.shape[1], 1)[above])
    assert np.all(
        back[~above] <= lp.max(1, keepdims=True).repeat(lp.shape[1], 1)[~above] - quality.FLOOR + 1e-4
    )
    other = quality.log_softmax(lp + np.random.default_rng(4).normal(0, 1, lp.shape).astype(np.float32))
    exact, packed = quality.kl_divergence(lp, other), quality.kl_divergence(back, other)
    assert np.allclose(packed, exact, rtol=1e-3, atol=1e-5)
    flat_codes, flat_rows = quality.pack(np.full((1, 4), -math.log(4), np.float32))  # one value: scale 0
    assert np.allclose(quality.unpack(flat_codes, flat_rows), -math.log(4))


def test_mean_stderr():
    assert quality.mean_stderr([1, 3]) == (2.0, 1.0)
    assert quality.mean_stderr([5.0]) == (5.0, 0.0)


# --- compare() on a fake model: characters are tokens, log-probs come from a fixed table -----


class FakeScorer(quality._Scorer):
    """A 'model' file holds a noise level; its log-probs are a fixed random table plus that noise."""

    TABLE = np.random.default_rng(5).normal(0, 3, (256, 256)).astype(np.float32)

    def __init__(self, model, n_ctx, threads):
        path = Path(model)
        if not path.is_file():
            raise KitError(f"no such file: {path}")
        self.ref = SimpleNamespace(id=path.stem, path=path)
        self.engine = SimpleNamespace(
            sha256="0" * 64, backend=SimpleNamespace(n_threads=1), close=lambda: None
        )
        self.llm = SimpleNamespace(tokenize=lambda b, add_bos, special: list(b))
        self.n_ctx, self.n_vocab = n_ctx, int(path.read_text().split()[1])
        self.noise = float(path.read_text().split()[0])

    def chunks(self, tokens):
        first = self.n_ctx // 2
        for start in range(0, len(tokens), self.n_ctx):
            chunk = tokens[start : start + self.n_ctx]
            logits = self.TABLE[chunk[first:-1]][:, : self.n_vocab]
            logits = logits + self.noise * np.random.default_rng(start).normal(size=logits.shape)
            yield quality.log_softmax(logits.astype(np.float32)), chunk[first + 1 :]


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_Scorer", FakeScorer)
    monkeypatch.setattr(quality.tempfile, "tempdir", str(tmp_path))
    models = {}
    for name, spec in {"ref": "0 256", "same": "0 256", "noisy": "1 256", "small": "0 128"}.items():
        models[name] = tmp_path / f"{name}.gguf"
        models[name].write_text(spec)
    return SimpleNamespace(text="It was the best of times, it was the worst of times. " * 20, **models)


def test_compare_rows_and_the_reference_is_deleted(fakes, tmp_path):
    rows = quality.compare([fakes.same, fakes.noisy], fakes.ref, fakes.text, n_ctx=64, **QUIET)
    ref, same, noisy = rows
    assert ref["reference"] and ref["kld_mean"] == 0 and ref["n_chunks"] == len(fakes.text) // 64
    assert (
        abs(same["kld_mean"]) < 1e-5
        and same["same_top_pct"] == 100
        and same["ppl"] == pytest.approx(ref["ppl"])
    )
    assert noisy["kld_mean"] > 0.05 and noisy["same_top_pct"] < 100 and noisy["delta_ppl"] != 0
    assert noisy["kld_median"] <= noisy["kld_p99"] <= noisy["kld_max"]
    assert ref["n_tokens_scored"] == ref["n_chunks"] * 31
    assert not list(tmp_path.glob("research-kld-*"))  # the temporary log-probs are gone
    table = quality.format_table(rows)
    assert table.count("\n") == 3 and "* ref" in table and "noisy" in table


def test_a_kept_reference_is_reused_and_gives_the_same_figures(fakes, tmp_path):
    first = quality.compare([fakes.noisy], fakes.ref, fakes.text, n_ctx=64, keep=tmp_path / "kept", **QUIET)
    kept = quality.Reference.open(tmp_path / "kept")
    again = quality.compare([fakes.noisy], kept, **QUIET)
    assert again[1]["kld_mean"] == first[1]["kld_mean"] and again[0]["ppl"] == first[0]["ppl"]
    assert (tmp_path / "kept" / "codes.npy").is_file()  # not deleted: the caller keeps it
    kept.delete()
    assert not (tmp_path / "kept").exists()
    with pytest.raises(KitError, match="no usable reference"):
        quality.Reference.open(tmp_path / "kept")


def test_different_vocabularies_are_refused(fakes, tmp_path):
    with pytest.raises(KitError, match="different vocabularies"):
        quality.compare([fakes.small], fakes.ref, fakes.text, n_ctx=64, **QUIET)
    assert not list(tmp_path.glob("research-kld-*"))  # cleaned up after the error too


def test_too_short_a_corpus_says_how_many_tokens_are_needed(fakes, tmp_path):
    with pytest.raises(KitError, match=r"is 11 tokens .* needs 64"):
        quality.compare([fakes.noisy], fakes.ref, "Hello world", n_ctx=64, **QUIET)
    assert not list(tmp_path.glob("research-kld-*"))


def test_missing_files_are_refused(tmp_path):
    with pytest.raises(KitError, match="no such file"):
        quality.perplexity(tmp_path / "missing.gguf", "some text")
    with pytest.raises(KitError, match="cannot read the corpus"):
        quality.load_corpus(tmp_path / "missing.txt")


def test_load_corpus_drops_one_trailing_newline_as_llama_perplexity_does(tmp_path):
    (tmp_path / "c.txt").write_text("line one\nline two\n\n")
    assert quality.load_corpus(tmp_path / "c.txt") == "line one\nline two\n"


# --- the real bundled model, and llama.cpp's own llama-perplexity -----------------------------

N_CTX, CHUNKS = 128, 3


def sample_text() -> str:
    """A few thousand tokens: the start of the kit's corpus, else the questions of the question set."""
    try:
        return quality.load_corpus()[:10_000]
    except KitError:
        import json

        paths = sorted((quality.REPO_ROOT / "data" / "qa").glob("*.jsonl"))
        return "\n".join(json.loads(line)["question"] for p in paths for line in p.read_text().splitlines())


@pytest.fixture(scope="module")
def llama_perplexity(llama_tools):
    """Run the built llama-perplexity on N_CTX-token chunks with 2 threads; its whole output."""
    exe = Path(llama_tools["bin_dir"]) / "llama-perplexity"

    def run(*args) -> str:
        r = subprocess.run([str(exe), "-c", str(N_CTX), "--chunks", str(CHUNKS), "-t", "2", *map(str, args)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout + r.stderr

    return run


def printed(pattern: str, log: str) -> tuple[str, ...]:
    """The figures as llama-perplexity printed them (strings: their digits are what is compared)."""
    m = re.search(pattern, log)
    assert m, f"{pattern!r} not in llama-perplexity's output:\n{log[-3000:]}"
    return m.groups()


def as_printed(value: float, figure: str) -> str:
    """`value` with as many decimals as llama-perplexity's `figure` (printf and Python round alike)."""
    return f"{value:.{len(figure.partition('.')[2])}f}"


def units_apart(value: float, figure: str) -> int:
    """How many units in the last printed place `value`, printed like `figure`, is from it."""
    return abs(int(as_printed(value, figure).replace(".", "")) - int(figure.replace(".", "")))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(sample_text() + "\n")
    return path


@pytest.fixture(scope="module")
def q4_0(tmp_path_factory):
    """The bundled Q4_1 requantized to Q4_0 by llama.cpp's own llama_model_quantize (in a child)."""
    out = tmp_path_factory.mktemp("quant") / "smollm2-requant-q4_0.gguf"
    code = (
        "import ctypes, sys, llama_cpp as l\n"
        "p = l.llama_model_quantize_default_params()\n"
        "p.ftype, p.allow_requantize, p.nthread = l.LLAMA_FTYPE_MOSTLY_Q4_0, True, 2\n"
        "sys.exit(l.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    src = quality.resolve(None).path
    r = subprocess.run([sys.executable, "-c", code, str(src), str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def kld_rows(corpus, q4_0, tmp_path_factory):
    """compare() of the bundled model and its Q4_0 against the bundled model, the log-probs kept."""
    keep = tmp_path_factory.mktemp("ref") / "logprobs"
    text = quality.load_corpus(corpus)
    rows = quality.compare(
        [None, q4_0], None, text, n_ctx=N_CTX, n_chunks=CHUNKS, threads=2, keep=keep, **QUIET
    )
    return rows, keep


@pytest.mark.model
def test_perplexity_equals_llama_perplexitys(corpus, llama_perplexity):
    """The figures llama-perplexity prints, digit for digit: the running PPL after each chunk, the final
    PPL (4 decimals) and its uncertainty (5 decimals). Its default run evaluates the three chunks as
    three sequences of one batch (n_seq=16), ours one chunk at a time: the logits agree all the same."""
    text = quality.load_corpus(corpus)
    runs = [quality.perplexity(None, text, n_ctx=N_CTX, n_chunks=n, threads=2) for n in range(1, CHUNKS + 1)]
    log = llama_perplexity("-m", quality.resolve(None).path, "-f", corpus)
    ours = runs[-1]
    assert ours["n_chunks"] == CHUNKS and ours["n_tokens_scored"] == CHUNKS * (N_CTX // 2 - 1)
    ppl, err = printed(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", log)
    assert (as_printed(ours["ppl"], ppl), as_printed(ours["ppl_stderr"], err)) == (ppl, err)
    running = re.findall(r"\[\d+\]([\d.]+),", log)  # "[1]108.3245,[2]35.2785,[3]30.7684," (%.4lf)
    assert [f"{r['ppl']:.4f}" for r in runs] == running


@pytest.mark.model
def test_kld_of_the_model_against_itself_is_zero_and_a_requantized_file_differs(kld_rows):
    (ref, itself, q4), _ = kld_rows
    assert abs(itself["kld_mean"]) < 1e-4 and itself["kld_max"] < 1e-3 and itself["same_top_pct"] == 100
    assert itself["ppl"] == pytest.approx(ref["ppl"], rel=1e-6)
    assert q4["kld_mean"] > 0.01 and q4["same_top_pct"] < 100
    assert abs(q4["ppl"] / ref["ppl"] - 1) > 1e-3 and q4["file_size"] < ref["file_size"]


@pytest.mark.model
def test_kld_equals_llama_perplexitys(kld_rows, corpus, q4_0, tmp_path, llama_perplexity):
    """Every figure of ours that `llama-perplexity --kl-divergence` prints, at its printed precision.

    Digit for digit: Mean KLD and its uncertainty, Median KLD, Maximum KLD (6 decimals), Same top p
    (3 decimals) and the uncertainty of Mean PPL(Q). Within one unit of the last printed place, and
    only these two:
    - Mean PPL(Q), printed to 6 decimals (one unit is 2.6e-8 of 38.59): llama-perplexity takes each token's
      negative log-likelihood in float32 as (max + log sum) - logit, ours is -((logit - max) - log sum)
      in float32. On the same logits 130 of the 189 tokens round one float32 step apart (at most
      1.9e-6), and the mean moves by about 2e-8: 38.588189 against 38.588190, while llama.cpp's
      formula applied to our own logits gives its 38.588190 exactly.
    - 99.0% KLD: llama-perplexity interpolates at float32(0.99) * 188 = 186.119995 where np.percentile
      uses 186.12; times the gap between those two sorted KLDs (0.18 here) that is 8.8e-7, one unit
      (2.112647 against 2.112648; llama.cpp's interpolation on our own KLD values gives 2.112647).
    Not compared: Mean PPL(base) and PPL(Q)-PPL(base), which llama-perplexity takes from the
    16-bit stored base log-probs (30.768225) where ours uses the base model's exact perplexity
    (30.768354, llama-perplexity's own plain run prints 30.7684), and the Δp statistics we do not compute.
    """
    (_, _, q4), keep = kld_rows
    base = tmp_path / "base.kld"
    llama_perplexity("-m", quality.resolve(None).path, "-f", corpus, "--kl-divergence-base", base)
    log = llama_perplexity("-m", q4_0, "-f", corpus, "--kl-divergence-base", base, "--kl-divergence")
    mean, mean_err = printed(r"Mean\s+KLD:\s+([\d.]+)\s+±\s+([\d.]+)", log)
    median, top, p99 = (printed(rf"{n}\s+KLD:\s+([\d.]+)", log)[0] for n in ("Median", "Maximum", "99.0%"))
    (same,) = printed(r"Same top p:\s+([\d.]+)\s+±", log)
    ppl, ppl_err = printed(r"Mean PPL\(Q\)\s+:\s+([\d.]+)\s+±\s+([\d.]+)", log)
    exact = {"kld_mean": mean, "kld_stderr": mean_err, "kld_median": median, "kld_max": top}
    exact |= {"same_top_pct": same, "ppl_stderr": ppl_err}
    assert {k: as_printed(q4[k], figure) for k, figure in exact.items()} == exact
    assert units_apart(q4["ppl"], ppl) <= 1 and units_apart(q4["kld_p99"], p99) <= 1
    # llama.cpp's file holds the same 16-bit log-probs: header, tokens, then per row 2 floats + codes.
    raw = base.read_bytes()
    n_ctx, n_vocab, n_chunk = np.frombuffer(raw, np.int32, 3, 8)
    tokens = np.frombuffer(raw, np.int32, n_ctx * n_chunk, 20)
    nv = 2 * ((n_vocab + 1) // 2) + 4
    theirs = np.frombuffer(raw, np.uint16, offset=20 + tokens.nbytes).reshape(-1, nv)
    kept = quality.Reference.open(keep)
    assert (n_ctx, n_chunk) == (N_CTX, CHUNKS) and np.array_equal(tokens, kept.tokens)
    assert np.array_equal(theirs[:, :4].copy().view(np.float32), kept.rows)  # each row's scale and offset
    # Codes: llama.cpp rounds (logit - min) * (1 / scale), ours (log-prob - min) / scale; a value within
    # float32 rounding of a half step rounds the other way (6,656 of 9.3 million, 0.07 %, here).
    differ = np.abs(theirs[:, 4 : 4 + n_vocab].astype(np.int32) - kept.codes)
    assert differ.max() == 1 and np.mean(differ > 0) < 0.002


@pytest.mark.model
def test_kld_by_hand_from_llama_cpp_pythons_own_logits_equals_compares(kld_rows, corpus, q4_0):
    """Notebook 02's check: KL divergence by hand from logits read through llama-cpp-python's public
    API (research.selection.table.scored_logprobs) is compare()'s within 0.1 %, over the same positions,
    and the logits are real. Read from `Llama.scores` without logits_all, as notebook 02 once did, every
    row is zeros: uniform distributions, KL 0, top tokens 0, 1, 2, and a check against the kit's
    kl_divergence() of the same arrays passed all the same."""
    from research.selection import table

    (_, _, q4), _ = kld_rows
    text = quality.load_corpus(corpus)
    pairs = zip(
        table.scored_logprobs(None, text, N_CTX, CHUNKS, threads=2),
        table.scored_logprobs(q4_0, text, N_CTX, CHUNKS, threads=2),
        strict=True,
    )
    kl, same = [], 0
    for (log_p, targets), (log_q, targets_q) in pairs:
        assert np.array_equal(targets, targets_q) and log_p.shape == (N_CTX // 2 - 1, log_p.shape[1])
        for lp in (log_p, log_q):  # no row anywhere near uniform (log 1/n_vocab, about -10.8)
            assert lp.max(axis=1).min() > -np.log(lp.shape[1]) + 1
        kl.append(np.where(log_p > -16, np.exp(log_p) * (log_p - log_q), 0).sum(axis=1))
        same += int(np.sum(log_p.argmax(axis=1) == log_q.argmax(axis=1)))
    kl = np.concatenate(kl)
    assert len(kl) == q4["n_tokens_scored"]
    assert kl.mean() == pytest.approx(q4["kld_mean"], rel=1e-3)
    assert 100 * same / len(kl) == pytest.approx(q4["same_top_pct"], abs=1)


@pytest.mark.model
def test_scored_logprobs_refuses_too_short_a_text():
    from research.selection import table

    with pytest.raises(KitError, match="fewer than 2 chunks of 128"):
        next(table.scored_logprobs(None, "Only a few words.", 128, 2, threads=2))


@pytest.mark.model
def test_too_short_a_corpus_on_the_real_model():
    with pytest.raises(KitError, match=r"one chunk needs 128"):
        quality.perplexity(None, "Only a few words.", n_ctx=128, threads=2)

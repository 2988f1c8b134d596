"""Quality of quantized models: perplexity over a corpus and KL divergence from a reference model.

The method is llama.cpp's `llama-perplexity` (tools/perplexity/perplexity.cpp), default mode: the
whole text is tokenized once, cut into chunks of n_ctx tokens, each chunk evaluated from an empty
KV cache (BOS first when the vocabulary adds one), and only the second half of each chunk scored,
so every scored token has at least n_ctx/2 tokens of context. The reference model's log-probs are
kept as `llama-perplexity --kl-divergence-base` keeps them, 16 bits a value with a scale and an
offset per row, in memory-mapped .npy files, so any number of quantized files are compared
against one pass of the reference. Its figures match llama-perplexity's to the printed digits.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research import paths
from research.errors import KitError
from research.models.catalog import resolve
from research.units import MB

FLOOR = 16.0  # log-probs more than 16 below a row's top are stored as 0 and skipped (as llama.cpp)


def load_corpus(path=None) -> str:
    """The evaluation text: `path`, else the first data/corpus/*.txt of the repository.

    One trailing newline is dropped, as llama-perplexity's -f does, so both see the same tokens.
    """
    if path is None:
        found = sorted((paths.kit_data_dir() / "corpus").glob("*.txt"))
        if not found:
            raise KitError("no corpus: data/corpus/ holds no .txt file; name a text file instead")
        path = found[0]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KitError(f"cannot read the corpus {path}: {e}") from None
    return text[:-1] if text.endswith("\n") else text


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, the sum taken in float64: `[[0, 0]]` -> `[[-0.693, -0.693]]`."""
    x = logits - logits.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


def pack(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of log-probs as uint16 codes and (scale, offset) per row, as llama.cpp stores them.

    The 65535 steps span the row's top down to FLOOR below it; anything lower becomes code 0.
    """
    top = logp.max(axis=-1, keepdims=True)
    low = np.maximum(logp.min(axis=-1, keepdims=True), top - FLOOR)
    scale = (top - low) / 65535
    safe = np.where(scale > 0, scale, 1)
    codes = np.where(logp > low, np.rint((logp - low) / safe), 0).astype(np.uint16)
    return codes, np.concatenate([scale, low], axis=-1).astype(np.float32)


def unpack(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The log-probs back from pack(): `unpack(*pack(x))` is within scale/2 of x above the floor."""
    return codes * rows[:, :1] + rows[:, 1:]


def kl_divergence(ref_logp: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """KL(P_ref || P) per row; terms with ref log-prob <= -16 are left out, as llama-perplexity does."""
    terms = np.where(ref_logp > -FLOOR, np.exp(ref_logp) * (ref_logp - logp), 0)
    return terms.sum(axis=-1, dtype=np.float64)


def mean_stderr(values) -> tuple[float, float]:
    """Mean and its standard error: `mean_stderr([1, 3])` -> (2.0, 1.0)."""
    values = np.asarray(values, dtype=np.float64)
    n, mean = len(values), float(np.mean(values))
    var = float(np.mean(np.square(values))) - mean * mean
    return mean, math.sqrt(var / (n - 1)) if n > 1 and var > 0 else 0.0


class _Scorer:
    """One model loaded for chunked scoring: log-probs of the second half of each chunk."""

    def __init__(self, model, n_ctx: int, threads: int | None):
        from research.engine import Engine, EngineConfig

        self.ref = resolve(model)
        self.engine = Engine.load(self.ref, EngineConfig(n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads))
        self.llm = self.engine.backend.llm
        if self.llm.n_ctx() < n_ctx:  # llama.cpp rounds the context up to 256s, never down
            self.engine.close()
            raise KitError(f"{self.ref.id} takes a context of {self.llm.n_ctx()} tokens at most; lower n_ctx")
        self.n_ctx, self.n_vocab = n_ctx, self.llm.n_vocab()

    def tokens(self, text: str, n_chunks: int | None) -> tuple[np.ndarray, int]:
        """The tokens of the chunks to score, and how many chunks; KitError when text is too short."""
        # As llama-perplexity: BOS only when the vocabulary adds it, special tokens as plain text.
        tokens = np.array(self.llm.tokenize(text.encode(), add_bos=True, special=False), dtype=np.int32)
        if len(tokens) < self.n_ctx:
            raise KitError(
                f"the corpus is {len(tokens)} tokens for {self.ref.id}, and one chunk needs {self.n_ctx}: "
                "use a longer text or a smaller n_ctx"
            )
        n = min(n_chunks or len(tokens) // self.n_ctx, len(tokens) // self.n_ctx)
        return tokens[: n * self.n_ctx], n

    def chunks(self, tokens: np.ndarray):
        """Yield (log-probs, next tokens) of positions n_ctx/2 .. n_ctx-2 of each chunk."""
        n_ctx, first, b = self.n_ctx, self.n_ctx // 2, self.llm._batch.batch
        for start in range(0, len(tokens), n_ctx):
            chunk = tokens[start : start + n_ctx]
            b.n_tokens = n_ctx
            for i, t in enumerate(chunk.tolist()):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = t, i, 1, 0
                b.logits[i] = i >= first  # no output rows (lm-head work) for the unscored first half
            if self.engine.backend.add_bos:
                b.token[0] = self.llm.token_bos()
            self.llm._ctx.kv_cache_clear()
            self.llm._ctx.decode(self.llm._batch)
            logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(n_ctx - first, self.n_vocab))
            yield log_softmax(logits[:-1]), chunk[first + 1 :]  # a copy: the view dies with the next decode

    def row(self, nll: list[np.ndarray], seconds: float) -> dict:
        """The figures of one run, with what is needed to reproduce it (file hash, threads, version)."""
        from importlib.metadata import version

        mean, err = mean_stderr(np.concatenate(nll))
        ppl = math.exp(mean)
        return {
            "model": self.ref.id,
            "path": str(self.ref.path),
            "file_size": self.ref.path.stat().st_size,
            "sha256": self.engine.sha256,
            **{"ppl": ppl, "ppl_stderr": ppl * err, "nll": mean, "n_tokens_scored": sum(map(len, nll))},
            **{"n_ctx": self.n_ctx, "n_threads": self.engine.backend.n_threads, "seconds": seconds},
            "llama_cpp_python": version("llama-cpp-python"),
        }

    def close(self) -> None:
        self.engine.close()


def _nll(logp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return -logp[np.arange(len(targets)), targets]


def perplexity(model, text: str | None = None, n_ctx=512, n_chunks: int | None = None, threads=None) -> dict:
    """Perplexity of one model over `text` (else load_corpus()), as llama-perplexity computes it.

    Returns a row: model, path, file_size, sha256, ppl, ppl_stderr, nll (mean, nats), n_tokens_scored,
    n_chunks, n_ctx, n_threads, llama_cpp_python, seconds, tokens_per_s (all tokens evaluated).
    """
    text = load_corpus() if text is None else text
    scorer = _Scorer(model, n_ctx, threads)
    try:
        tokens, n = scorer.tokens(text, n_chunks)
        t0 = time.perf_counter()
        nll = [_nll(lp, targets) for lp, targets in scorer.chunks(tokens)]
        seconds = time.perf_counter() - t0
        return scorer.row(nll, seconds) | {"n_chunks": n, "tokens_per_s": len(tokens) / seconds}
    finally:
        scorer.close()


@dataclass
class Reference:
    """The reference model's packed log-probs over a corpus, in `folder` (removed by delete())."""

    folder: Path
    meta: dict  # the reference's perplexity row, with n_chunks and n_vocab
    tokens: np.ndarray  # the chunks' tokens, which every compared model must reproduce
    codes: np.ndarray  # uint16 (rows, n_vocab), memory-mapped
    rows: np.ndarray  # float32 (rows, 2): scale and offset of each row

    @classmethod
    def build(cls, model, text: str, n_ctx=512, n_chunks=None, threads=None, folder=None) -> Reference:
        """Run `model` once over `text`; its log-probs go to `folder` (else a new temporary folder)."""
        scorer = _Scorer(model, n_ctx, threads)
        made = folder is None  # a temporary folder of ours, removed again if anything fails
        folder = Path(folder or tempfile.mkdtemp(prefix="research-kld-"))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tokens, n = scorer.tokens(text, n_chunks)
            per = n_ctx - 1 - n_ctx // 2
            need, free = n * per * (scorer.n_vocab * 2 + 8), shutil.disk_usage(folder).free
            if need > free:
                raise KitError(
                    f"the reference log-probs need {need / MB:,.0f} MB in {folder}, which has "
                    f"{free / MB:,.0f} MB free; score fewer chunks or keep them on another disk"
                )
            codes = np.lib.format.open_memmap(
                folder / "codes.npy", "w+", np.uint16, (n * per, scorer.n_vocab)
            )
            rows, nll, t0 = np.zeros((n * per, 2), np.float32), [], time.perf_counter()
            for c, (lp, targets) in enumerate(scorer.chunks(tokens)):
                codes[c * per : (c + 1) * per], rows[c * per : (c + 1) * per] = pack(lp)
                nll.append(_nll(lp, targets))
            codes.flush()
            meta = scorer.row(nll, time.perf_counter() - t0) | {"n_chunks": n, "n_vocab": scorer.n_vocab}
        except BaseException:
            if made:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            scorer.close()
        np.save(folder / "tokens.npy", tokens)
        np.save(folder / "rows.npy", rows)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        return cls.open(folder)

    @classmethod
    def open(cls, folder) -> Reference:
        """A reference kept by an earlier build(folder=...)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            load = lambda name, **kw: np.load(folder / name, **kw)  # noqa: E731
            return cls(folder, meta, load("tokens.npy"), load("codes.npy", mmap_mode="r"), load("rows.npy"))
        except (OSError, ValueError) as e:
            raise KitError(f"{folder} holds no usable reference log-probs ({e}); build them again") from None

    def delete(self) -> None:
        self.codes = None  # drop the memory map before its file
        shutil.rmtree(self.folder, ignore_errors=True)


def _against(scorer: _Scorer, ref: Reference, text: str | None) -> dict:
    """One model's compare() row: its perplexity and KL divergence from the reference."""
    m, per = ref.meta, ref.meta["n_ctx"] - 1 - ref.meta["n_ctx"] // 2
    same_tokens = text is None or np.array_equal(scorer.tokens(text, m["n_chunks"])[0], ref.tokens)
    if scorer.n_vocab != m["n_vocab"] or not same_tokens:
        raise KitError(
            f"{scorer.ref.id} and {m['model']} have different vocabularies ({scorer.n_vocab} and "
            f"{m['n_vocab']} tokens, or the corpus tokenizes differently); KL divergence needs one tokenizer"
        )
    nll, kld, same, t0 = [], [], 0, time.perf_counter()
    for c, (lp, targets) in enumerate(scorer.chunks(ref.tokens)):
        codes = np.asarray(ref.codes[c * per : (c + 1) * per])
        kld.append(kl_divergence(unpack(codes, ref.rows[c * per : (c + 1) * per]), lp))
        nll.append(_nll(lp, targets))
        same += int(np.sum(lp.argmax(axis=-1) == codes.argmax(axis=-1)))
    kld = np.concatenate(kld)
    row = scorer.row(nll, time.perf_counter() - t0)
    kld_mean, kld_err = mean_stderr(kld)
    return row | {
        **{"delta_ppl": row["ppl"] - m["ppl"], "kld_mean": kld_mean, "kld_stderr": kld_err},
        **{"kld_median": float(np.median(kld)), "kld_p99": float(np.percentile(kld, 99))},
        **{"kld_max": float(kld.max()), "same_top_pct": 100.0 * same / len(kld)},
    }


def compare(
    models,
    reference,
    text: str | None = None,
    n_ctx: int = 512,
    n_chunks: int | None = None,
    threads: int | None = None,
    keep=None,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> list[dict]:
    """Perplexity and KL divergence of each of `models` against `reference`, one row each.

    The first row is the reference's own (kld 0 by definition); list it among `models` as well to
    see a second run reproduce it. `reference` is a model (id or path) run over `text` (else
    load_corpus()) now, or a Reference kept earlier, whose chunks are then used as they are.
    `keep`: a folder to keep the reference's log-probs in for later runs (else they are deleted).
    """
    given = isinstance(reference, Reference)
    if not given:
        text = load_corpus() if text is None else text
        progress(f"{resolve(reference).id}: reference log-probs over the corpus ...")
        reference = Reference.build(reference, text, n_ctx, n_chunks, threads, folder=keep)
    m = reference.meta
    common = {"n_chunks": m["n_chunks"], "n_tokens": len(reference.tokens)}
    zero = dict.fromkeys(("delta_ppl", "kld_mean", "kld_stderr", "kld_median", "kld_p99", "kld_max"), 0.0)
    rows = [m | zero | common | {"same_top_pct": 100.0, "reference": True}]
    try:
        for model in models:
            scorer = _Scorer(model, m["n_ctx"], threads)
            try:
                progress(f"{scorer.ref.id}: {m['n_chunks']} chunks of {m['n_ctx']} tokens ...")
                rows.append(_against(scorer, reference, text) | common | {"reference": False})
            finally:
                scorer.close()
    finally:
        if keep is None and not given:
            reference.delete()
    return rows


def format_table(rows: list[dict]) -> str:
    """Rows of compare() as a text table, the reference marked with *."""
    lines = [
        f"{'model':32} {'MB':>6} {'PPL':>16} {'ΔPPL':>8} {'KLD mean':>18} {'median':>8} "
        f"{'p99':>8} {'max':>8} {'same top':>8}"
    ]
    for r in rows:
        name = ("* " if r.get("reference") else "") + r["model"]
        lines.append(
            f"{name[:32]:32} {r['file_size'] / MB:6.1f} {r['ppl']:8.3f} ± {r['ppl_stderr']:5.3f} "
            f"{r['delta_ppl']:+8.3f} {r['kld_mean']:8.5f} ± {r['kld_stderr']:7.5f} {r['kld_median']:8.5f} "
            f"{r['kld_p99']:8.5f} {r['kld_max']:8.4f} {r['same_top_pct']:7.2f}%"
        )
    return "\n".join(lines)

"""The paper's model measured where its weights do not matter: files of Orca-Mini-3B's exact shape.

Orca-Mini-3B's weights cannot be downloaded here, but peak memory and decode speed depend only on
the shape (layers, widths, heads, vocabulary) and the tensor types, not on the values: llama.cpp
reads and multiplies every weight the same whether it is trained or random. So the kit writes a
random-weight F16 GGUF of OpenLLaMA-3B's shape (Orca-Mini-3B's base: 26 layers 3200 wide,
feed-forward 8640, 32 heads of 100, a 32,000-piece SentencePiece vocabulary, untied output),
quantizes it with llama.cpp to the paper's types, measures peak memory in a fresh process at
the contexts asked and decode speed on this machine, and keeps the figures as JSON. The answers
of such a file are noise: quality and answers stay untestable without the real weights.

It takes minutes and gigabytes (the F16 source is 6,535 MB, Q8_0 3,473 MB), so notebook 02 runs it
only with ORCA_SHAPED = True; the rendered results (docs/results) carry the recorded figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from research.measure import bench
from research.measure import memory as memory_measure
from research.models import quantize
from research.models.gguf import read_gguf
from research.paths import REPO_ROOT
from research.units import MB

#: OpenLLaMA-3B's shape (openlm-research/open_llama_3b config.json), which Orca-Mini-3B keeps:
#: 3,426,473,600 parameters, 3200 wide (not a multiple of 256: k-quants fall back).
ORCA_MINI_3B = dict(n_layer=26, n_embd=3200, n_ff=8640, n_head=32, n_head_kv=32, n_vocab=32000)
#: The paper's type (Q5_0, about 5.6 bits/weight) between the smallest and the largest legacy type.
TYPES = ("Q4_0", "Q5_0", "Q8_0")
#: Where the recorded figures of the last full run are kept (committed with the rendered results).
RECORDED = REPO_ROOT / "docs" / "results" / "orca_mini_3b_shaped.json"
#: The name notebook 02 saves its measurement under, in its output folder.
RUN_FILE = "orca_mini_3b_shaped.json"


def n_params(n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int, n_vocab: int) -> int:
    """Parameters of a llama-shaped model with an untied output matrix and RMS norms.

    `n_params(**ORCA_MINI_3B)` -> 3426473600 (Orca-Mini-3B's 3.43 B).
    """
    kv = n_embd * n_head_kv * (n_embd // n_head)
    layer = 2 * n_embd * n_embd + 2 * kv + 3 * n_embd * n_ff + 2 * n_embd
    return n_layer * layer + 2 * n_vocab * n_embd + n_embd


def _vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece vocabulary laid out as LLaMA's: <unk> <s> </s>, 256 byte pieces, then pieces
    (the bundled model's tokens, "Ġ" read as "▁"), cut or padded to `n_vocab`."""
    import gguf

    from research.models.catalog import resolve

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    seen = set(pieces)
    for text in gguf.GGUFReader(str(resolve(None).path)).fields["tokenizer.ggml.tokens"].contents():
        piece = text.replace("Ġ", "▁")
        if piece not in seen and not piece.startswith("<") and len(pieces) < n_vocab:
            seen.add(piece)
            pieces.append(piece)
    pieces += [f"▁p{i:05d}" for i in range(n_vocab - len(pieces))]
    scores = [0.0] * 259 + [-float(i) for i in range(n_vocab - 259)]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)  # unknown, control, byte, normal
    return pieces, scores, types


def write_random_llama(
    path,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv: int,
    n_vocab: int,
    context_length: int = 2048,
    seed: int = 0,
    progress=lambda s: None,
) -> Path:
    """Write a loadable F16 GGUF ("llama" architecture) of this shape with random weights.

    Tensors are written one at a time, so the process holds one tensor (at most 391 MB here), not
    the whole model. No chat template: like Orca-Mini-3B's GGUF files, the format comes from the
    catalog (orca-mini). Returns the path.
    """
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"random-llama-{n_layer}x{n_embd} (Orca-Mini-3B shape)")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    pieces, scores, types = _vocabulary(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    kv = n_head_kv * (n_embd // n_head)
    plan: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, n_embd))]
    for i in range(n_layer):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", (n_embd,)), (p + "attn_q.weight", (n_embd, n_embd))]
        plan += [(p + "attn_k.weight", (kv, n_embd)), (p + "attn_v.weight", (kv, n_embd))]
        plan += [(p + "attn_output.weight", (n_embd, n_embd)), (p + "ffn_norm.weight", (n_embd,))]
        plan += [(p + "ffn_gate.weight", (n_ff, n_embd)), (p + "ffn_up.weight", (n_ff, n_embd))]
        plan += [(p + "ffn_down.weight", (n_embd, n_ff))]
    plan += [("output_norm.weight", (n_embd,)), ("output.weight", (n_vocab, n_embd))]
    for name, shape in plan:  # numpy's order: rows x columns
        dtype = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for k, (_, shape) in enumerate(plan):
        if len(shape) == 1:
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
        else:
            w.write_tensor_data((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16))
        if k % 45 == 0:
            progress(f"  random weights: tensor {k + 1} of {len(plan)}")
    w.close()
    return path


def orca_shaped(
    out_dir, types=TYPES, keep_source: bool = False, progress=lambda s: print(s, file=sys.stderr, flush=True)
) -> list:
    """Orca-Mini-3B-shaped files quantized to `types` in `out_dir`: research.models.quantize.QuantResult list.

    Files already there are reused. The 6,535 MB F16 source is deleted afterwards unless
    `keep_source`, and is not written at all when every type exists already.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    source = out / "orca-mini-3b-shaped.F16.gguf"
    qtypes = [quantize.quant_type(t) for t in types]
    wanted = [out / quantize.output_name(source, t) for t in qtypes]
    if not source.exists() and all(p.exists() for p in wanted):  # an earlier run's files
        return [
            quantize.describe(p, t, _fallbacks(p), 0.0, reused=True)
            for p, t in zip(wanted, qtypes, strict=True)
        ]
    if not source.exists():
        progress(f"writing {source.name} ({n_params(**ORCA_MINI_3B) * 2 / MB:,.0f} MB of random F16 weights)")
        t0 = time.perf_counter()
        part = source.with_name(source.name + ".part")
        write_random_llama(part, **ORCA_MINI_3B, progress=progress)
        part.replace(source)
        progress(f"  written in {time.perf_counter() - t0:.0f} s")
    try:
        return quantize.quantize(source, list(types), out, progress=progress)
    finally:
        if not keep_source:
            source.unlink(missing_ok=True)


def _fallbacks(path: Path) -> dict:
    """The fallbacks research.models.quantize recorded beside a file it wrote ({} when none is kept)."""
    try:
        return json.loads(path.with_name(path.name + ".json").read_text()).get("fallbacks", {})
    except (OSError, ValueError):
        return {}


def measure(
    files,
    contexts=(512, 2048),
    threads: int = 2,
    pp: int = 64,
    tg: int = 16,
    reps: int = 2,
    progress=lambda s: print(s, file=sys.stderr, flush=True),
) -> dict:
    """Peak memory at each context (predicted and measured in a fresh process) and speed (the kit's
    chat path and llama-bench) of each file. Returns {"memory": rows, "bench": rows, "files": rows}."""
    from research import device

    files = [Path(f).resolve() for f in files]
    memory_rows = []
    for f in files:
        for n_ctx in contexts:
            progress(f"{f.name}: peak memory at a {n_ctx}-token context, in a fresh process ...")
            t0 = time.perf_counter()
            memory_rows += memory_measure.compare([f], n_ctx=n_ctx)
            progress(f"  {memory_rows[-1]['measured_mb']:.0f} MB measured ({time.perf_counter() - t0:.0f} s)")
    bench_rows = bench.sweep(files, [threads], pp, tg, reps, progress=progress)
    file_rows = []
    for f in files:
        info = read_gguf(f)
        file_rows.append(
            {
                "path": str(f),
                "type": info.file_type_name,
                "size_mb": info.file_size / MB,
                "n_params": info.n_params,
                "bits_per_weight": info.bits_per_weight,
                "tensor_bytes": sum(t.n_bytes for t in info.tensors),
            }
        )
    return {
        "memory": memory_rows,
        "bench": bench_rows,
        "files": file_rows,
        "machine": {"cpu": device.cpu_info(), "threads": threads, "cpu_kind": device.cpu_kind()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def save(result: dict, path) -> Path:
    """Write a measure() result as JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path


def recorded(path=None) -> dict | None:
    """The figures of the last full run (RECORDED, committed with docs/results), or None."""
    try:
        return json.loads(Path(path or RECORDED).read_text())
    except (OSError, ValueError):
        return None


def summary_rows(result: dict) -> list[dict]:
    """One row per file of a measure() result: type, size, bits/weight, peak MB predicted and
    measured at each context, and decode/prompt t/s of the kit and of llama-bench."""
    rows = []
    for f in result["files"]:
        row = {k: f[k] for k in ("type", "size_mb", "bits_per_weight")}
        for m in result["memory"]:
            if Path(m["model"]).name == Path(f["path"]).name:
                row[f"predicted_{m['n_ctx']}_mb"] = m["predicted_mb"]
                row[f"measured_{m['n_ctx']}_mb"] = m["measured_mb"]
                row[f"error_{m['n_ctx']}"] = m["error"]
                if m.get("measured_runtime_mb") is not None:  # records before 2026-12-07 lack it
                    row[f"runtime_{m['n_ctx']}_mb"] = m["measured_runtime_mb"]
        for b in result["bench"]:
            if Path(b["model_filename"]).name == Path(f["path"]).name:
                row[f"{b['backend']}_{b['test'][:2]}_tps"] = b["avg_ts"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    """`python -m research.paper.shaped [OUT_DIR] [--types Q4_0,Q5_0,Q8_0] [--record PATH]`: write,
    quantize and measure the Orca-Mini-3B-shaped files, and record the figures (default: RECORDED)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m research.paper.shaped", description=main.__doc__)
    p.add_argument("out_dir", nargs="?", default="/tmp/orca-shaped", help="where the GGUF files go")
    p.add_argument("--types", default=",".join(TYPES), help="quantization types (default: %(default)s)")
    p.add_argument("--contexts", default="512,2048", help="contexts for peak memory (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="decode threads (default: %(default)s)")
    p.add_argument("--reps", type=int, default=2, help="speed repetitions (default: %(default)s)")
    p.add_argument("--record", default=str(RECORDED), help="JSON to write (default: %(default)s)")
    p.add_argument("--delete", action="store_true", help="delete the quantized files afterwards")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    results = orca_shaped(a.out_dir, types=a.types.split(","))
    files = [r.path for r in results]
    contexts = tuple(int(c) for c in a.contexts.split(","))
    result = measure(files, contexts=contexts, threads=a.threads, reps=a.reps)
    result["command"] = "python -m research.paper.shaped " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    result["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    print(f"recorded in {save(result, a.record)} after {result['minutes']} min", file=sys.stderr)
    if a.delete:
        for f in files:
            Path(f).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

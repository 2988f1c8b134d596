"""The memory model checked: load a model in a fresh process, answer one long question, and put
its peak resident memory beside research.engine.memory's prediction.

The measuring process is this module run as a child (`python -m research.measure.memory PATH
N_CTX KV_TYPE`), so nothing the parent holds is counted; figures in MB (research.units) from the
child's VmHWM, for the loading and for the answering phase.
"""

from __future__ import annotations

import json

from research import child
from research.engine import memory
from research.units import MB


def _measure_here(argv: list[str]) -> None:
    """The child: load, answer a full prompt batch plus 32 tokens, print the peaks as JSON."""
    from research import device
    from research.engine import Engine, EngineConfig, Sampling, conversation

    path, n_ctx, kv_type = argv[0], int(argv[1]), argv[2]
    before = device.rss_mb()
    engine = Engine.load(path, EngineConfig(n_ctx=n_ctx, n_threads=2, kv_type=kv_type))
    loaded = device.rss_mb()
    load_peak = device.peak_rss_mb()
    device.reset_peak_rss()
    question = "Summarize: " + "the quick brown fox jumps over the lazy dog " * 80
    msgs = conversation(question[: 4 * min(512, n_ctx - 80)])
    engine.answer(msgs, Sampling(temperature=0, max_tokens=32, ignore_eos=True))
    answer_peak = device.peak_rss_mb()
    peaks = {"runtime_mb": before, "loaded_mb": loaded, "peak_mb": max(load_peak, answer_peak)}
    print(json.dumps(peaks | {"answer_peak_mb": answer_peak}))


def measure(model, n_ctx: int = 4096, kv_type: str = "f16") -> dict:
    """Peak resident memory of a fresh process that loads `model` and answers one long question.

    A full prompt batch and 32 generated tokens: the engine's peak in chat use.
    """
    from research.models.catalog import resolve

    ref = resolve(model)
    cmd = child.python_module("research.measure.memory", ref.path, n_ctx, kv_type)
    r = child.run(cmd, f"measuring {ref.path.name}", timeout=900)
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(models, n_ctx: int = 4096, kv_type: str = "f16") -> list[dict]:
    """Prediction against measurement for each model: one row each, with the error."""
    from research.models.catalog import resolve
    from research.models.gguf import read_gguf

    rows = []
    for model in models:
        ref = resolve(model)
        info = read_gguf(ref.path)
        est = memory.estimate(info, n_ctx, kv_type)
        got = measure(ref, n_ctx, kv_type)
        rows.append(
            {
                "model": ref.path.name,
                "file_mb": info.file_size / MB,
                "n_ctx": n_ctx,
                "kv_type": kv_type,
                "load": est.load,
                **{f"{k}_mb": v / MB for k, v in est.as_dict().items() if k != "load"},
                "predicted_mb": est.total / MB,
                "measured_mb": got["peak_mb"],
                # The same process before it loaded the model: Python with llama_cpp and NumPy, which
                # llama-cli does not have; the engine's own memory is the peak less this.
                "measured_runtime_mb": got["runtime_mb"],
                "error": est.total / MB / got["peak_mb"] - 1,
                "predicted_answering_mb": est.answering / MB,
                "measured_answering_mb": got["answer_peak_mb"],
                "error_answering": est.answering / MB / got["answer_peak_mb"] - 1,
            }
        )
    return rows


def format_compare(rows: list[dict]) -> str:
    """Prediction and measurement side by side, with the parts of the prediction (MB)."""
    lines = [
        f"{'model':36} {'ctx':>5} {'kv':5} {'file':>6} {'load':>4} {'weights':>7} {'repack':>6} {'KV':>5} "
        f"{'compute':>7} {'runtime':>7} {'predicted':>9} {'measured':>8} {'error':>6}  "
        f"{'answering: pred':>15} {'meas':>5} {'error':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r['model'][:36]:36} {r['n_ctx']:5} {r['kv_type']:5} {r['file_mb']:6.0f} {r['load']:>4} "
            f"{r['weights_mb']:7.0f} "
            f"{r['repacked_mb']:6.0f} {r['kv_cache_mb']:5.0f} {r['compute_mb']:7.0f} {r['runtime_mb']:7.0f} "
            f"{r['predicted_mb']:9.0f} {r['measured_mb']:8.0f} {r['error']:+6.1%}  "
            f"{r['predicted_answering_mb']:15.0f} {r['measured_answering_mb']:5.0f} "
            f"{r['error_answering']:+6.1%}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    child.child_main(_measure_here)

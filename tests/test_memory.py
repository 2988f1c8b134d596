"""The memory model: predicted before loading, checked against a fresh process's measured peak."""

import pytest

from research import memory, quantize
from research.errors import KitError
from research.gguf_info import read_gguf
from research.models import resolve


def test_cpu_kinds_follow_llama_cpps_repack_rules():
    assert memory.cpu_kind(["sse4_2", "avx", "avx2", "fma"]) == "x86-avx2"
    assert memory.cpu_kind(["avx2", "avx512f", "avx512bw"]) == "x86-avx512"
    assert memory.cpu_kind(["fp", "asimd", "asimddp"]) == "arm-dotprod"  # Snapdragon 888
    assert memory.cpu_kind(["fp", "asimd"]) == "other"


def test_kv_cache_types_scale_the_cache():
    f16 = memory.kv_cache_bytes(4096, 30, 3, 64)
    assert f16 == 94371840
    assert memory.kv_cache_bytes(4096, 30, 3, 64, memory.KV_TYPES["q8_0"]) == pytest.approx(f16 * 17 / 32)


@pytest.mark.model
def test_estimate_counts_repacked_weights_twice_only_where_the_cpu_repacks():
    info = read_gguf(resolve(None).path)  # Q4_1: never repacked
    x86 = memory.estimate(info, 2048, cpu="x86-avx2")
    assert x86.repacked == 0 and x86.weights == info.file_size  # tied output: the whole file is read
    with pytest.raises(KitError, match="unknown KV-cache type 'q3'"):
        memory.estimate(info, 2048, "q3")
    small = memory.estimate(info, 2048, "q8_0")
    assert small.kv_cache < x86.kv_cache and small.total < x86.total


@pytest.mark.model
def test_prediction_is_within_15_percent_of_the_measured_peak(tmp_path):
    """Q4_0 is repacked on x86 (AVX2) and ARM; Q8_0 only on ARM: both must be predicted."""
    files = [r.path for r in quantize.quantize(None, "Q4_0", tmp_path, progress=lambda s: None)]
    files.append(resolve(None).path)
    rows = memory.compare(files, n_ctx=2048) + memory.compare(files[:1], n_ctx=1024, kv_type="q8_0")
    for row in rows:
        assert abs(row["error"]) < 0.15, memory.format_compare(rows)
        assert row["measured_mb"] > row["file_mb"]
    if memory.cpu_kind() != "other":  # the repacked copy is real ...
        q4_0, q4_1 = rows[0], rows[1]
        assert q4_0["repacked_mb"] > 40
        # ... yet the peak no longer holds the weights twice: the engine drops the copied file
        # pages while loading (without that, Q4_0 measured 42 MB more than Q4_1 over its file).
        extra = (q4_0["measured_mb"] - q4_0["file_mb"]) - (q4_1["measured_mb"] - q4_1["file_mb"])
        assert extra < q4_0["repacked_mb"] / 2, memory.format_compare(rows)


@pytest.mark.model
def test_the_engine_releases_the_mapped_copy_of_repacked_weights(tmp_path):
    from research.engine import Engine, EngineConfig, Sampling, conversation

    if memory.cpu_kind() == "other":
        pytest.skip("llama.cpp repacks nothing on this CPU")
    [q4_0] = quantize.quantize(None, "Q4_0", tmp_path, progress=lambda s: None)
    info = read_gguf(q4_0.path)
    base = memory.rss_mb()
    engine = Engine.load(q4_0.path, EngineConfig(n_ctx=2048, n_threads=2))
    loaded = memory.rss_mb() - base
    answer, stats = engine.answer(
        conversation("What is the capital of France?"), Sampling(temperature=0, max_tokens=16)
    )
    assert "Paris" in answer  # the repacked copy computes; the dropped pages were not needed
    repacked = sum(t.n_bytes for t in memory.repacked_tensors(info)) / memory.MB
    kv = memory.estimate(info, 2048).kv_cache / memory.MB
    # Without the release the mapped copy (57 MB) would still be resident beside the repacked one.
    assert repacked > 40 and loaded < info.file_size / memory.MB + kv + 0.5 * repacked
    assert stats.peak_rss_mb - base < info.file_size / memory.MB + kv + 40  # + activations, buffers
    engine.close()


@pytest.mark.model
def test_the_memory_model_holds_for_another_architecture(tmp_path):
    """A qwen2-shaped file (biased projections, grouped-query attention, k-quants that fit)."""
    from fakes import random_model_gguf

    src = random_model_gguf(
        tmp_path / "qwen2.F16.gguf", n_layer=8, n_embd=512, n_ff=1536, n_head=8, n_head_kv=2
    )
    [q] = quantize.quantize(src, "Q4_K_M", tmp_path, progress=lambda s: None)
    assert not q.fallbacks  # 512 and 1536 are multiples of 256
    [row] = memory.compare([q.path], n_ctx=2048)
    assert abs(row["error"]) < 0.15 and abs(row["error_answering"]) < 0.15, memory.format_compare([row])

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
def test_estimate_follows_how_the_engine_loads_each_file():
    info = read_gguf(resolve(None).path)  # Q4_1: never repacked, so the file is mapped
    x86 = memory.estimate(info, 2048, cpu="x86-avx2")
    assert x86.mapped and x86.repacked == 0 and x86.staging == 0
    assert x86.weights == info.file_size  # tied output: the whole file is read
    with pytest.raises(KitError, match="unknown KV-cache type 'q3'"):
        memory.estimate(info, 2048, "q3")
    small = memory.estimate(info, 2048, "q8_0")
    assert small.kv_cache < x86.kv_cache and small.total < x86.total
    # Forced to map a file whose weights are repacked, they count twice: the reason to read it in.
    forced = memory.estimate(info, 2048, cpu="other", mapped=True)
    assert forced.repacked == 0  # nothing repacks on a CPU without llama.cpp's repack kernels


def test_micro_batch_shrinks_only_for_wide_models():
    class Info:  # the header fields estimate() reads; no tensors: a 32,000-token vocabulary
        def __init__(self, n_embd, n_ff):
            self.block_count, self.head_count, self.head_count_kv = 24, 14, 2
            self.embedding_length, self.file_size, self.tensors, self.ff = n_embd, 300 * 10**6, [], n_ff

        def arch_value(self, key):
            return self.ff if key == "feed_forward_length" else None

    def working(info, n):
        est = memory.estimate(info, 2048, n_ubatch=n)
        return est.compute + est.runtime

    smollm2, qwen_1_5b = Info(576, 1536), Info(1536, 8960)
    assert memory.micro_batch(smollm2, 2048) == 512  # its activations are 14 MB at 512
    assert working(smollm2, 512) <= memory.WORKING_MEMORY
    assert memory.micro_batch(qwen_1_5b, 2048) == 128  # 69 MB at 512, 34 at 256
    assert working(qwen_1_5b, 256) > memory.WORKING_MEMORY >= working(qwen_1_5b, 128)
    assert memory.estimate(qwen_1_5b, 2048).compute == memory.estimate(qwen_1_5b, 2048, n_ubatch=128).compute


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
        repacked = sum(t.n_bytes for t in memory.repacked_tensors(read_gguf(files[0]))) / memory.MB
        assert repacked > 40 and (q4_0["load"], q4_1["load"]) == ("read", "mmap")
        # ... yet the peak does not hold the weights twice: read in, every weight is resident
        # once (mapped, Q4_0 measured 42 MB more than Q4_1 over its file).
        extra = (q4_0["measured_mb"] - q4_0["file_mb"]) - (q4_1["measured_mb"] - q4_1["file_mb"])
        assert extra < repacked / 4, memory.format_compare(rows)


@pytest.mark.model
def test_the_engine_reads_in_files_whose_weights_are_repacked(tmp_path):
    """Mapped, llama.cpp keeps the file's pages of repacked weights beside their copy (llama.cpp
    issue 16761); the engine reads such files in and holds each weight once."""
    from research.engine import Engine, EngineConfig, Sampling, conversation

    if memory.cpu_kind() == "other":
        pytest.skip("llama.cpp repacks nothing on this CPU")
    [q4_0] = quantize.quantize(None, "Q4_0", tmp_path, progress=lambda s: None)
    info = read_gguf(q4_0.path)
    repacked = sum(t.n_bytes for t in memory.repacked_tensors(info)) / memory.MB
    held = {}
    for mapped in (None, True):  # the engine's choice, then mapping forced
        base = memory.rss_mb()
        engine = Engine.load(q4_0.path, EngineConfig(n_ctx=2048, n_threads=2, use_mmap=mapped))
        answer, _ = engine.answer(
            conversation("What is the capital of France?"), Sampling(temperature=0, max_tokens=16)
        )
        held[mapped] = memory.rss_mb() - base
        assert "Paris" in answer  # both compute with the repacked copy
        assert engine.backend.mapped is (mapped is True)
        engine.close()
    assert repacked > 40 and held[True] - held[None] > repacked / 2, held  # the copy counted twice
    kv = memory.estimate(info, 2048).kv_cache / memory.MB
    assert held[None] < info.file_size / memory.MB + kv + 40  # + activations, buffers


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

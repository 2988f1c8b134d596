"""The memory model: predicted before loading, checked against a fresh process's measured peak."""

import collections
import re
from pathlib import Path

import pytest

from research import device
from research.engine import memory
from research.errors import KitError
from research.measure import memory as memory_measure
from research.models import quantize
from research.models.catalog import resolve
from research.models.gguf import GGUFInfo, read_gguf
from research.units import MB

#: Gemma 3 270M's header as llama.cpp reads it (google/gemma-3-270m: 18 layers, 640 wide, 4 query
#: heads and 1 KV head of 256, a 512-token window on all layers but every sixth).
GEMMA3_270M = GGUFInfo(
    Path("gemma-3-270m.gguf"),
    0,
    3,
    32,
    0,
    {
        "general.architecture": "gemma3",
        "gemma3.block_count": 18,
        "gemma3.embedding_length": 640,
        "gemma3.feed_forward_length": 2048,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        "gemma3.attention.sliding_window": 512,
    },
    (),
)
MIB = 2**20


def logged_kv_caches(log) -> list[tuple[float, int, int]]:
    """(MiB, cells, layers) of each "llama_kv_cache: size = ..." line llama.cpp logged."""
    pattern = r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers"
    return [(float(m[1]), int(m[2]), int(m[3])) for line in log if (m := re.search(pattern, line))]


def test_cpu_kinds_follow_llama_cpps_repack_rules():
    assert device.cpu_kind(["sse4_2", "avx", "avx2", "fma"]) == "x86-avx2"
    assert device.cpu_kind(["avx2", "avx512f", "avx512bw"]) == "x86-avx512"
    assert device.cpu_kind(["fp", "asimd", "asimddp"]) == "arm-dotprod"  # Snapdragon 888
    assert device.cpu_kind(["fp", "asimd"]) == "other"


def test_kv_cache_types_scale_the_cache():
    f16 = memory.kv_cache_bytes(4096, 30, 3, 64)
    assert f16 == 94371840
    assert memory.kv_cache_bytes(4096, 30, 3, 64, memory.KV_TYPES["q8_0"].bytes_per_value) == pytest.approx(
        f16 * 17 / 32
    )


def test_sliding_window_kv_cache_is_sized_as_llama_cpp_logs_it():
    """Figures from llama.cpp 0c1e570's own log (RESEARCH_LLAMA_LOG=1) loading a file of Gemma 3
    270M's shape: "llama_kv_cache: size = 12.00 MiB (4096 cells, 3 layers ...)" and so on."""
    assert [i for i, swa in enumerate(memory.sliding_window_layers(GEMMA3_270M)) if not swa] == [5, 11, 17]
    logged = {  # (n_ctx, n_ubatch, swa_full): (global layers' MiB, window layers' MiB)
        (4096, 512, True): (12.00, 60.00),  # the engine's cache: "using full-size SWA cache"
        (4096, 512, False): (12.00, 15.00),  # 1024 cells: 512 + 512 padded to 256
        (2048, 128, False): (6.00, 11.25),  # 768 cells
        (1000, 128, False): (3.00, 11.25),  # 1024 and 768 cells: the context padded to 256 too
        (512, 512, False): (1.50, 7.50),  # never more than the context
    }
    for (n_ctx, n_ubatch, full), mib in logged.items():
        got = memory.model_kv_cache_bytes(GEMMA3_270M, n_ctx, "f16", n_ubatch, swa_full=full)
        assert got == sum(mib) * MIB, (n_ctx, n_ubatch, full)
    assert memory.swa_cache_cells(4096, 512, 512, swa_full=False) == 1024
    assert memory.swa_cache_cells(2048, 512, 128, swa_full=False) == 768
    assert memory.swa_cache_cells(1000, 512, 128) == 1024  # full size: the padded context
    assert memory.SWA_FULL  # as llama-cpp-python 0.3.36 leaves llama.cpp's default
    # The head size is attention.key_length (256), not width / heads (160).
    est = memory.estimate(GEMMA3_270M, 4096, n_ubatch=512, mapped=True, cpu="other")
    assert est.kv_cache == 72 * MIB


def test_a_sentencepiece_vocabulary_costs_less_than_a_bpe_one():
    """Resident memory a vocab-only load of llama.cpp added (MB): a 262,144-token SentencePiece
    vocabulary as Gemma's (tests/fakes.py) and llama.cpp's models/ggml-vocab-qwen2.gguf (BPE,
    151,936 tokens, 151,387 merges) and ggml-vocab-gemma-4.gguf (262,144 tokens, 514,906 merges)."""
    for got, measured in (
        (memory.vocab_bytes(262144, "spm", 0), 43.0e6),
        (memory.vocab_bytes(151936, "other", 151387), 49.3e6),
        (memory.vocab_bytes(262144, "other", 514906), 103.7e6),
    ):
        assert got == pytest.approx(measured, rel=0.05)


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
    rows = memory_measure.compare(files, n_ctx=2048) + memory_measure.compare(
        files[:1], n_ctx=1024, kv_type="q8_0"
    )
    for row in rows:
        assert abs(row["error"]) < 0.15, memory_measure.format_compare(rows)
        assert row["measured_mb"] > row["file_mb"]
        assert 20 < row["measured_runtime_mb"] < 200  # Python with llama_cpp and NumPy, no model
    if device.cpu_kind() != "other":  # the repacked copy is real ...
        q4_0, q4_1 = rows[0], rows[1]
        repacked = sum(t.n_bytes for t in memory.repacked_tensors(read_gguf(files[0]))) / MB
        assert repacked > 40 and (q4_0["load"], q4_1["load"]) == ("read", "mmap")
        # ... yet the peak does not hold the weights twice: read in, every weight is resident
        # once (mapped, Q4_0 measured 42 MB more than Q4_1 over its file).
        extra = (q4_0["measured_mb"] - q4_0["file_mb"]) - (q4_1["measured_mb"] - q4_1["file_mb"])
        assert extra < repacked / 4, memory_measure.format_compare(rows)


@pytest.mark.model
def test_the_engine_reads_in_files_whose_weights_are_repacked(tmp_path):
    """Mapped, llama.cpp keeps the file's pages of repacked weights beside their copy (llama.cpp
    issue 16761); the engine reads such files in and holds each weight once."""
    from research.engine import Engine, EngineConfig, Sampling, conversation

    if device.cpu_kind() == "other":
        pytest.skip("llama.cpp repacks nothing on this CPU")
    [q4_0] = quantize.quantize(None, "Q4_0", tmp_path, progress=lambda s: None)
    info = read_gguf(q4_0.path)
    repacked = sum(t.n_bytes for t in memory.repacked_tensors(info)) / MB
    held = {}
    for mapped in (None, True):  # the engine's choice, then mapping forced
        base = device.rss_mb()
        engine = Engine.load(q4_0.path, EngineConfig(n_ctx=2048, n_threads=2, use_mmap=mapped))
        answer, _ = engine.answer(
            conversation("What is the capital of France?"), Sampling(temperature=0, max_tokens=16)
        )
        held[mapped] = device.rss_mb() - base
        assert "Paris" in answer  # both compute with the repacked copy
        assert engine.backend.mapped is (mapped is True)
        engine.close()
    assert repacked > 40 and held[True] - held[None] > repacked / 2, held  # the copy counted twice
    kv = memory.estimate(info, 2048).kv_cache / MB
    assert held[None] < info.file_size / MB + kv + 40  # + activations, buffers


@pytest.mark.model
def test_the_memory_model_holds_for_another_architecture(tmp_path):
    """A qwen2-shaped file (biased projections, grouped-query attention, k-quants that fit)."""
    from fakes import random_model_gguf

    src = random_model_gguf(
        tmp_path / "qwen2.F16.gguf", n_layer=8, n_embd=512, n_ff=1536, n_head=8, n_head_kv=2
    )
    [q] = quantize.quantize(src, "Q4_K_M", tmp_path, progress=lambda s: None)
    assert not q.fallbacks  # 512 and 1536 are multiples of 256
    [row] = memory_measure.compare([q.path], n_ctx=2048)
    assert abs(row["error"]) < 0.15 and abs(row["error_answering"]) < 0.15, memory_measure.format_compare(
        [row]
    )


@pytest.mark.model
def test_the_memory_model_holds_for_gemma3(tmp_path, monkeypatch):
    """A gemma3-shaped file: sliding-window layers, head size 256 on a 128-wide model, tied
    embeddings and a 262,144-token SentencePiece vocabulary (predicted 18 % high before: a flat
    300 bytes a token for the vocabulary, which takes 155)."""
    import llama_cpp
    from fakes import gemma3_model_gguf

    from research.engine import engine
    from research.engine import llama as llama_backend

    path = gemma3_model_gguf(tmp_path / "gemma3.F16.gguf", n_layer=7, n_embd=128, n_vocab=262144)
    info = read_gguf(path)
    assert memory.sliding_window_layers(info) == [True] * 5 + [False, True]
    [row] = memory_measure.compare([path], n_ctx=2048)
    assert abs(row["error"]) < 0.04 and abs(row["error_answering"]) < 0.04, memory_measure.format_compare(
        [row]
    )

    # The KV caches llama.cpp allocates, as it logs them: the engine's (full size, every layer
    # holds the context), and with swa_full off (the window layers hold 512 + micro-batch cells).
    monkeypatch.setattr(llama_backend, "LLAMA_LOG", collections.deque(maxlen=100_000))  # keep every line
    e = engine.Engine.load(path, engine.EngineConfig(n_ctx=2048, n_threads=2))
    caches = logged_kv_caches(llama_backend.LLAMA_LOG)
    assert [(cells, layers) for _, cells, layers in caches] == [(2048, 1), (2048, 6)]
    n_ubatch = e.backend.n_ubatch
    assert sum(m for m, _, _ in caches) * MIB == memory.model_kv_cache_bytes(info, 2048, "f16", n_ubatch)
    e.close()
    llama_backend.LLAMA_LOG.clear()
    llm = llama_cpp.Llama(str(path), n_ctx=2048, n_ubatch=128, swa_full=False, flash_attn=True, verbose=False)
    caches = logged_kv_caches(llama_backend.LLAMA_LOG)
    llm.close()
    assert [(cells, layers) for _, cells, layers in caches] == [(2048, 1), (768, 6)]
    assert sum(m for m, _, _ in caches) * MIB == memory.model_kv_cache_bytes(
        info, 2048, "f16", 128, swa_full=False
    )

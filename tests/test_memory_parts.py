"""The memory check part by part, on headers written here: each figure worked out by hand beside it
(tests/test_memory.py checks the whole against llama.cpp's logs and measured peaks).
"""

from types import SimpleNamespace

import pytest

from research import device
from research.engine import memory
from research.errors import KitError

MB = 2**20  # the kit's one unit, named MB (research.units)


def tensor(name, type_name="Q4_0", shape=(64, 64), n_bytes=1000):
    return SimpleNamespace(name=name, type_name=type_name, shape=shape, n_bytes=n_bytes)


class Info:
    """The header fields the memory model reads."""

    def __init__(self, arch=None, tensors=(), file_size=10 * MB, metadata=None, **values):
        self.architecture = arch
        self.tensors = list(tensors)
        self.file_size = file_size
        self.metadata = metadata or {}
        self.values = values
        self.block_count = values.pop("block_count", 4)
        self.head_count = values.pop("head_count", 4)
        self.head_count_kv = values.pop("head_count_kv", None)
        self.embedding_length = values.pop("embedding_length", 256)
        self.context_length = values.pop("context_length", None)

    def arch_value(self, key):
        return self.values.get(key)


def test_padding_to_256_cells():
    assert [memory._padded(n) for n in (1, 255, 256, 257, 1000, 4096)] == [256, 256, 256, 512, 1024, 4096]
    assert memory.KV_PAD == 256


def test_swa_cache_cells():
    assert memory.swa_cache_cells(4096, 512, 512, swa_full=False) == 1024
    assert memory.swa_cache_cells(1000, 512, 512, swa_full=True) == 1024  # the padded context
    assert memory.swa_cache_cells(1000, 512, 512, swa_full=True, pad=False) == 1000
    assert memory.swa_cache_cells(300, 512, 512, swa_full=False) == 512  # at most the (padded) context
    assert memory.swa_cache_cells(300, 512, 512, swa_full=False, pad=False) == 300


def test_sliding_window_layers():
    assert memory.sliding_window_layers(Info(block_count=3)) == [False] * 3  # no window
    window = {"attention.sliding_window": 512}
    assert memory.sliding_window_layers(Info("gemma2", block_count=4, **window)) == [True, False, True, False]
    assert memory.sliding_window_layers(Info("mystery", block_count=3, **window)) == [False] * 3
    flags = {"attention.sliding_window_pattern": [1, 0, 1]}
    assert memory.sliding_window_layers(Info("gemma2", block_count=3, **window, **flags)) == [
        True,
        False,
        True,
    ]
    short = {"attention.sliding_window_pattern": [1, 0]}  # not one per layer: the default pattern
    assert memory.sliding_window_layers(Info("gemma2", block_count=3, **window, **short)) == [
        True,
        False,
        True,
    ]
    every3 = {"attention.sliding_window_pattern": 3}
    assert (
        memory.sliding_window_layers(Info("x", block_count=6, **window, **every3)) == [True, True, False] * 2
    )
    zero = {"attention.sliding_window_pattern": 0}  # 0: every layer has the window
    assert memory.sliding_window_layers(Info("x", block_count=2, **window, **zero)) == [True, True]
    boolean = {"attention.sliding_window_pattern": True}  # not a count: the architecture's default
    assert memory.sliding_window_layers(Info("gemma2", block_count=2, **window, **boolean)) == [True, False]
    assert memory.sliding_window_layers(Info(block_count=None)) == []


def test_kv_cache_of_a_header():
    """4 layers, 4 heads of 64 (256 wide), 2 KV heads, f16: 256 cells x 2 heads x (64 + 64) x 2 bytes
    = 131072 bytes a layer at a 200-token context padded to 256; 524288 for 4 layers."""
    info = Info(head_count_kv=2)
    assert memory.model_kv_cache_bytes(info, 200) == 4 * 256 * 2 * 128 * 2
    assert memory.model_kv_cache_bytes(info, 200, pad=False) == 4 * 200 * 2 * 128 * 2
    assert memory.model_kv_cache_bytes(info, 256, "q8_0") == 4 * 256 * 2 * 128 * 34 // 32
    assert memory.model_kv_cache_bytes(Info(), 256) == 4 * 256 * 4 * 128 * 2  # no KV count: all heads
    per_layer = Info(**{"attention.head_count_kv": [1, 2, 3, 4]})
    assert memory.model_kv_cache_bytes(per_layer, 256) == (1 + 2 + 3 + 4) * 256 * 128 * 2
    lengths = Info(head_count_kv=1, **{"attention.key_length": 100, "attention.value_length": 28})
    assert memory.model_kv_cache_bytes(lengths, 256) == 4 * 256 * 128 * 2
    swa = Info(
        "gemma2",
        head_count_kv=1,
        **{
            "attention.sliding_window": 100,
            "attention.key_length_swa": 10,
            "attention.value_length_swa": 6,
        },
    )  # layers 0 and 2 windowed: 100 + 28 = 128 cells padded to 256, heads of 10 + 6
    cells = memory.model_kv_cache_bytes(swa, 1024, n_ubatch=28, swa_full=False)
    assert cells == 2 * 1024 * 128 * 2 + 2 * 256 * 16 * 2
    assert memory.model_kv_cache_bytes(Info(block_count=2, head_count=None, head_count_kv=1), 256) == (
        2 * 256 * 512 * 2
    )  # no head count: one head as wide as the model
    assert memory._per_layer([1, 2], 2, 9) == [1, 2] and memory._per_layer([1], 2, 9) == [9, 9]
    assert memory._per_layer(3, 2, 9) == [9, 9]


def test_an_estimate_adds_up_and_says_so():
    est = memory.MemoryEstimate(
        weights=100 * MB, kv_cache=20 * MB, repacked=5 * MB, compute=7 * MB, runtime=50 * MB, staging=30 * MB
    )
    assert est.overhead == 62 * MB
    assert est.loading == 205 * MB  # weights + repacked + staging + KV + runtime
    assert est.answering == 182 * MB  # weights + repacked + KV + compute + runtime
    assert est.total == 205 * MB and est.load == "mmap"
    assert est.describe() == "205 MB (weights 100 MB + KV cache 20 MB + 62 MB working memory)"
    assert est.as_dict() == {
        "weights": 100 * MB,
        "kv_cache": 20 * MB,
        "repacked": 5 * MB,
        "compute": 7 * MB,
        "runtime": 50 * MB,
        "staging": 30 * MB,
        "total": 205 * MB,
        "answering": 182 * MB,
        "load": "mmap",
    }
    answering = memory.MemoryEstimate(100 * MB, 20 * MB, compute=9 * MB, mapped=False)
    assert answering.total == answering.answering == 129 * MB + memory.RUNTIME_BYTES + memory.CONTEXT_BYTES
    assert answering.load == "read"
    assert memory.RUNTIME_BYTES == 52_000_000 and memory.CONTEXT_BYTES == 6_000_000


def test_vocabulary_and_activations():
    assert memory.vocab_bytes(1000, "spm", 0) == 2_500_000 + 1000 * 155
    assert memory.vocab_bytes(1000, "other", 10) == 2_500_000 + 1000 * 222 + 10 * 85
    assert memory.vocab_bytes(1000) == 2_500_000 + 1000 * 222 + 1000 * 85  # a merge a token
    # 8 tokens x (2 x 256 + 2 x 256 + 3 x 1024) x 4 bytes, the logits and the decode step's
    # candidates (1000 x (8 + 12)), the vocabulary
    assert memory._compute_bytes(256, 1024, 1000, 8) == 8 * 4096 * 4 + 20000 + memory.vocab_bytes(1000)
    assert memory._compute_bytes(256, 1024, 1000, 8, ("spm", 0), n_q=512) == (
        8 * (512 + 1024 + 3072) * 4 + 20000 + memory.vocab_bytes(1000, "spm", 0)
    )


def test_the_tokenizer_of_a_header():
    assert memory._vocab_kind(Info()) == ("other", None)
    assert memory._vocab_kind(Info(metadata={"tokenizer.ggml.model": "llama"})) == ("spm", 0)
    merges = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.merges": ["a b", "c d"]}
    assert memory._vocab_kind(Info(metadata=merges)) == ("other", 2)
    counted = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.merges": SimpleNamespace(length=7)}
    assert memory._vocab_kind(Info(metadata=counted)) == ("other", 7)


def test_file_compute_bytes_reads_the_header():
    embd = tensor("token_embd.weight", shape=(256, 500))
    info = Info(tensors=[embd], feed_forward_length=[100, 700], **{"attention.key_length": 128})
    # widest feed-forward (700), queries 4 heads x 128, 500 tokens in the vocabulary
    assert memory._file_compute_bytes(info, 4) == memory._compute_bytes(
        256, 700, 500, 4, ("other", None), 512
    )
    plain = Info()  # no feed-forward length: 4 x width; no embedding tensor: 32,000 tokens
    assert memory._file_compute_bytes(plain, 4) == memory._compute_bytes(
        256, 1024, 32000, 4, ("other", None), 256
    )


def test_repacked_tensors_are_matrices_of_repacked_types_other_than_the_embedding():
    tensors = [
        tensor("blk.0.ffn_up.weight", "Q4_0", (64, 64)),
        tensor("blk.0.attn_q.weight", "Q4_K", (64, 64)),
        tensor("blk.0.ffn_down.weight", "Q8_0", (64, 64)),  # not repacked on x86
        tensor("token_embd.weight", "Q4_0", (64, 64)),
        tensor("blk.0.norm.weight", "Q4_0", (64,)),  # not a matrix
        tensor("blk.0.odd.weight", "Q4_0", (64, 60)),  # rows not a multiple of 8
    ]
    info = Info(tensors=tensors)
    names = [t.name for t in memory.repacked_tensors(info, "x86-avx2")]
    assert names == ["blk.0.ffn_up.weight", "blk.0.attn_q.weight"]
    assert [t.name for t in memory.repacked_tensors(info, "arm-dotprod")] == names + ["blk.0.ffn_down.weight"]
    assert memory.repacked_tensors(info, "other") == []
    assert not memory.maps_file(info, "x86-avx2") and memory.maps_file(info, "other")


def test_estimate_of_a_file():
    embd, out = (
        tensor("token_embd.weight", "F16", (256, 500), 3 * MB),
        tensor("output.weight", "F16", (256, 500), 3 * MB),
    )
    big, small = (
        tensor("blk.0.ffn.weight", "Q4_0", (64, 64), 2 * MB),
        tensor("blk.1.ffn.weight", "Q4_0", (64, 64), MB),
    )
    info = Info(tensors=[embd, out, big, small], head_count_kv=2)
    mapped = memory.estimate(info, 256, cpu="x86-avx2", mapped=True, n_ubatch=64)
    # mapped and untied: the embedding's rows are read one a token, not counted; repacked twice
    assert (mapped.weights, mapped.repacked, mapped.staging, mapped.mapped) == (7 * MB, 3 * MB, 0, True)
    assert mapped.kv_cache == 4 * 256 * 2 * 128 * 2
    assert mapped.compute == memory._file_compute_bytes(info, 64)
    read = memory.estimate(info, 256, cpu="x86-avx2", n_ubatch=64)  # repacks: the kit reads it in
    assert (read.weights, read.repacked, read.staging, read.mapped) == (10 * MB, 0, 2 * MB, False)
    tied = memory.estimate(Info(tensors=[embd]), 256, cpu="other", n_ubatch=64)
    assert tied.weights == 10 * MB and tied.mapped
    assert memory.estimate(info, 100, cpu="other", n_ubatch=512).compute == memory._file_compute_bytes(
        info, 100
    )
    assert memory.estimate(info, 300, cpu="other", n_ubatch=64).kv_cache == 4 * 300 * 2 * 128 * 2  # unpadded
    with pytest.raises(KitError) as e:
        memory.estimate(info, 256, "q3")
    assert str(e.value) == "unknown KV-cache type 'q3'; choose from: f32, f16, q8_0, q4_0"


def test_the_load_plan():
    info = Info(tensors=[tensor("blk.0.ffn.weight", "Q4_0", (64, 64))], context_length=1024)
    assert memory.plan(info, 4096, cpu="x86-avx2") == memory.LoadPlan(1024, False, 512)  # capped, read in
    assert memory.plan(info, 512, use_mmap=True, cpu="x86-avx2") == memory.LoadPlan(512, True, 512)
    assert memory.plan(info, 512, n_ubatch=128, cpu="other") == memory.LoadPlan(512, True, 128)
    assert memory.plan(info, 512, n_ubatch=1024, n_batch=256, cpu="other").n_ubatch == 256
    assert memory.plan(Info(), 4096, cpu="other").n_ctx == 4096  # no trained context known


def test_micro_batch_steps_down_to_256():
    """Working memory under 90 MB (94,371,840 bytes): runtime 58,000,000, the logits and the decode
    step's candidates 32,000 x (8 + 12) and a 32,000-token BPE vocabulary (12,324,000) leave
    23,407,840 for the activations, n tokens x (4 x 1024 + 3 x ff) x 4 bytes: at 512 tokens ff up
    to 2444, at 256 up to 6254."""

    def info(n_ff):
        return Info(embedding_length=1024, feed_forward_length=n_ff)

    assert [memory.micro_batch(info(n), 2048) for n in (2444, 2445, 6254, 6255)] == [512, 256, 256, 128]
    assert memory.micro_batch(info(7000), 100) == 512  # a 100-token context never fills a batch
    assert memory.WORKING_MEMORY == 90 * MB


def test_budget():
    assert memory.budget(300 * MB, 20 * MB) == 420 * MB
    assert memory.WORKING_MEMORY_BUDGET == 100 * MB and memory.PREDICTION_MARGIN == 10 * MB


def test_estimate_of_a_published_shape():
    # 2 layers, 64 wide, ff 128, 1000 tokens: 2 x (4 x 64 x 64 + 3 x 64 x 128) + 1000 x 64 x 2
    assert memory._params(2, 64, 128, 1000, tied=False) == 2 * (16384 + 24576) + 128000
    assert memory._params(2, 64, 128, 1000, tied=True) == 2 * (16384 + 24576) + 64000
    params = memory._params(2, 64, 128, 1000, tied=False)
    mapped = memory.estimate_shape(10 * MB, "Q8_0", 2, 64, 128, 2, 32, 1000, False, 512, cpu="x86-avx2")
    assert mapped.weights == 10 * MB - int(10 * MB * 1000 * 64 / params) and mapped.mapped
    assert mapped.kv_cache == memory.kv_cache_bytes(512, 2, 2, 32)
    assert mapped.compute == memory._compute_bytes(64, 128, 1000, 512)
    tied = memory.estimate_shape(10 * MB, "Q8_0", 2, 64, 128, 2, 32, 1000, True, 512, cpu="x86-avx2")
    assert tied.weights == 10 * MB
    read = memory.estimate_shape(
        10 * MB, "Q4_K_M", 2, 64, 128, 2, 32, 1000, False, 512, "q8_0", "x86-avx2", 128
    )
    assert not read.mapped and read.weights == 10 * MB and read.repacked == 0
    assert read.staging == int(10 * MB * 64 * 128 / params)
    assert read.kv_cache == memory.kv_cache_bytes(512, 2, 2, 32, 34 / 32)
    assert read.compute == memory._compute_bytes(64, 128, 1000, 128)
    assert memory.estimate_shape(10 * MB, "q4_0", 2, 64, 128, 2, 32, 1000, True, 64).compute == (
        memory._compute_bytes(64, 128, 1000, 64)
    )  # lower-case names too; the micro-batch never above the context
    assert not memory.estimate_shape(10 * MB, "q4_0", 2, 64, 128, 2, 32, 1000, True, 64).mapped


def test_check_fits_says_what_to_do(monkeypatch):
    need = memory.MemoryEstimate(100 * MB, 20 * MB, runtime=30 * MB)
    monkeypatch.setattr(device, "available_bytes", lambda: (149 * MB, "the cgroup limit"))
    with pytest.raises(KitError) as e:
        memory.check_fits(need, "model.gguf")
    assert str(e.value) == (
        "model.gguf needs about 150 MB (weights 100 MB + KV cache 20 MB + 30 MB working memory), but only "
        "149 MB is free under the cgroup limit; choose a smaller model or quantization, or a shorter "
        "context (--ctx)"
    )
    monkeypatch.setattr(device, "available_bytes", lambda: (150 * MB, "available memory"))
    memory.check_fits(need, "model.gguf")  # exactly enough fits

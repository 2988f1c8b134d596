"""Memory: will a model fit before we load it? The prediction, part by part, from its header.

On a phone the low-memory killer ends a process that overreaches with no message at all
("signal 9" in Termux), so the kit predicts the peak (weights, repacked copies, KV cache,
activations, vocabulary, runtime) against what is available first and refuses in plain words.
The decisions the engine takes from the same figures live here too, once: whether to map or read
the file (maps_file), the micro-batch (micro_batch), and the working-memory budget. What the
device has and holds is read by research.device; research.measure.memory checks the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

from research import device
from research.errors import KitError
from research.units import MB


@dataclass(frozen=True)
class KVType:
    """A KV-cache type: its size a value and its ggml_type id (ggml.h), which llama.cpp takes."""

    bytes_per_value: float
    ggml_type: int


#: KV-cache types (block size 32: q8_0 = 34 bytes, q4_0 = 18). The one table of them.
KV_TYPES = {
    "f32": KVType(4.0, 0),
    "f16": KVType(2.0, 1),  # llama.cpp's default
    "q8_0": KVType(34 / 32, 8),
    "q4_0": KVType(18 / 32, 2),
}

#: Weight types llama.cpp's CPU backend copies into an interleaved layout at load time
#: (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type): the copy lives beside the
#: mapped file, so these weights count twice in resident memory. Keyed by CPU kind.
REPACKED = {
    "x86-avx512": {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4", "Q2_K"},
    "x86-avx2": {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"},
    "arm-dotprod": {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"},  # Snapdragon 888 on
    "other": set(),
}

#: The Python process with llama_cpp and numpy imported, before any model: 49 MiB measured here
#: (CPython 3.11, x86-64). Used when the prediction is for another device.
RUNTIME_BYTES = 52_000_000  # 49.6 MB
#: llama.cpp's own context, thread pool and allocator slack besides the sized buffers below;
#: fitted on the bundled model (what remained of the measured peak), about 6 MB.
CONTEXT_BYTES = 6_000_000
#: llama.cpp's vocabulary (src/llama-vocab.cpp, llama_vocab::impl): per token its text and score
#: (id_to_token), its entry in token_to_id and its piece (cache_token_to_piece); per BPE merge rule
#: a pair of strings in bpe_ranks. A SentencePiece vocabulary ("llama": Gemma, Llama 2, Phi-3) has
#: no merges. Least squares over the resident memory that loading 14 tokenizers vocab-only adds
#: (SentencePiece and BPE, 32,000 to 262,144 tokens, 0 to 514,906 merges: llama.cpp's own
#: models/ggml-vocab-*.gguf and tests/fakes.py's padded ones): within 1.2 MB of each but a padded
#: BPE one (+3.6 MB of 79) and command-r's (-4.4 MB of 85). A flat 300 bytes a token, as before,
#: made a 262,144-token SentencePiece vocabulary (Gemma 3's size) 78 MB; it takes 43.
VOCAB_BYTES_FIXED = 2_500_000  # the fit's intercept: what a vocab-only load holds besides
VOCAB_BYTES_PER_TOKEN = {"spm": 155, "other": 222}
VOCAB_BYTES_PER_MERGE = 85


def repacked_tensors(info, cpu: str | None = None) -> list:
    """Tensors of a GGUF that llama.cpp repacks for this CPU (weights of matrix products only)."""
    rules = REPACKED[cpu or device.cpu_kind()]
    return [
        t
        for t in info.tensors
        if t.type_name in rules
        and len(t.shape) >= 2
        and t.name != "token_embd.weight"
        and t.shape[1] % 8 == 0
    ]


def maps_file(info, cpu: str | None = None) -> bool:
    """Whether the engine maps the file (mmap) rather than reading it in: it reads it in when this
    CPU repacks some of its weights.

    llama.cpp copies repacked weights into an interleaved buffer and computes with the copy, yet
    a mapped file's pages of them stay resident beside it (llama.cpp issue 16761): the weights
    count twice. Dropping those pages (madvise) does not hold either: when the page cache keeps
    the file in large folios, reading the tensors that are not repacked maps whole folios back,
    repacked neighbours included (+216 MB measured on an 813 MB Q4_K_M). Read in, every weight
    is resident once; decode speed is the same (llama-bench -lm none against mmap).
    """
    return not repacked_tensors(info, cpu)


def kv_cache_bytes(
    n_ctx: int, n_layer: int, n_head_kv: int, head_dim: int, bytes_per_value: float = 2
) -> int:
    """Size of the K and V caches: 2 x layers x context x kv-heads x head size (f16: 2 bytes).

    `kv_cache_bytes(4096, 30, 3, 64)` -> 94371840 (SmolLM2-135M at a 4096-token context).
    """
    return int(2 * n_layer * n_ctx * n_head_kv * head_dim * bytes_per_value)


#: llama.cpp rounds the context up to a multiple of 256 cells, and a sliding-window cache's cells
#: too (llama-context.cpp:290 `cparams.n_ctx = GGML_PAD(cparams.n_ctx, 256)`;
#: llama-kv-cache-iswa.cpp:71-73).
KV_PAD = 256

#: Whether the engine's sliding-window layers keep a cache of the whole context (llama.cpp's
#: "full-size SWA cache"). llama_context_default_params() sets swa_full = true
#: (llama-context.cpp:3788), llama-cpp-python 0.3.36 changes it only when given swa_full
#: (llama_cpp/llama.py:363-364) and the engine gives none: llama.cpp logs "using full-size SWA
#: cache" and every layer holds n_ctx cells, window or not. (llama.cpp's own tools default to
#: false: common.h `swa_full = false`, so llama-cli holds only the window there.)
SWA_FULL = True

#: Layers with a sliding window, where the file gives no sliding_window_pattern: llama.cpp's
#: default pattern by architecture (src/models/<arch>.cpp: `load_swa_pattern(ml, n)`): every
#: n-th layer, counted from 1, attends to the whole context (llama-hparams.cpp:15
#: `is_swa = il % n < n - 1`). Architectures not listed here are taken as having no window:
#: their caches are predicted full size, never smaller than they are.
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma-embedding": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2}


def _padded(n: int) -> int:
    """`n` cells rounded up to a multiple of KV_PAD: 1000 -> 1024."""
    return -(-n // KV_PAD) * KV_PAD


def swa_cache_cells(
    n_ctx: int, n_swa: int, n_ubatch: int, swa_full: bool = SWA_FULL, pad: bool = True
) -> int:
    """Cells of llama.cpp's cache for sliding-window layers: the window plus one micro-batch,
    padded to 256 and at most the context, unless the cache is full size (llama-kv-cache-iswa.cpp:73
    `size_swa = GGML_PAD(std::min(size_base, hparams.n_swa*(unified ? n_seq_max : 1) + n_ubatch),
    256)`, one sequence here). `pad=False` leaves the context itself unpadded.

    `swa_cache_cells(4096, 512, 512, swa_full=False)` -> 1024 (Gemma 3 270M); 4096 when full.
    """
    size_base = _padded(n_ctx) if pad else n_ctx
    return size_base if swa_full else min(size_base, _padded(n_swa + n_ubatch))


def _per_layer(value, n_layer: int, default: int) -> list[int]:
    """A hyperparameter that may be given per layer (a GGUF array), as one value per layer."""
    if isinstance(value, list) and len(value) == n_layer:
        return [int(v) for v in value]
    return [default] * n_layer


def sliding_window_layers(info) -> list[bool]:
    """Which layers of a GGUF attend through a sliding window, as llama.cpp reads it: the file's
    sliding_window_pattern (one flag per layer, or every n-th layer global), else SWA_PATTERN."""
    n_layer = info.block_count or 0
    if not info.arch_value("attention.sliding_window"):
        return [False] * n_layer
    pattern = info.arch_value("attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layer:
        return [bool(v) for v in pattern]
    if not isinstance(pattern, int) or isinstance(pattern, bool):
        pattern = SWA_PATTERN.get(info.architecture or "")
        if pattern is None:
            return [False] * n_layer
    return [pattern == 0 or i % pattern < pattern - 1 for i in range(n_layer)]


def model_kv_cache_bytes(
    info,
    n_ctx: int,
    kv_type: str = "f16",
    n_ubatch: int = 512,
    swa_full: bool = SWA_FULL,
    pad: bool = True,
) -> int:
    """The KV cache llama.cpp allocates for a GGUF, layer by layer as it logs it ("llama_kv_cache:
    size = ... MiB (N cells, L layers ...)"): cells x (K + V head sizes) x KV heads x bytes.
    `pad=False`: for the context as given, not rounded up to 256 cells as llama.cpp does.

    Head sizes come from attention.key_length and value_length (Gemma 3: 256, larger than width
    over heads), and key_length_swa / value_length_swa on sliding-window layers
    (llama-model.cpp:1438-1466); KV heads may be given per layer.
    """
    n_layer = info.block_count or 0
    n_head = info.head_count or 1
    n_embd = info.embedding_length or 0
    heads = _per_layer(info.arch_value("attention.head_count_kv"), n_layer, info.head_count_kv or n_head)
    k_full = info.arch_value("attention.key_length") or n_embd // n_head
    v_full = info.arch_value("attention.value_length") or n_embd // n_head
    k_swa = info.arch_value("attention.key_length_swa") or k_full
    v_swa = info.arch_value("attention.value_length_swa") or v_full
    n_swa = info.arch_value("attention.sliding_window") or 0
    full = _padded(n_ctx) if pad else n_ctx
    swa = swa_cache_cells(n_ctx, n_swa, n_ubatch, swa_full, pad)
    total = 0.0
    for is_swa, n_head_kv in zip(sliding_window_layers(info), heads, strict=True):
        cells, k, v = (swa, k_swa, v_swa) if is_swa else (full, k_full, v_full)
        total += cells * n_head_kv * (k + v) * KV_TYPES[kv_type].bytes_per_value
    return int(total)


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak resident memory of the kit's engine answering a question, by part (bytes)."""

    weights: int  # the weights once: the mapped file as far as a forward pass reads it, or read in
    kv_cache: int
    repacked: int = 0  # a mapped file's pages of weights llama.cpp also holds repacked: twice
    compute: int = 0  # activations of one prompt batch, the logits row, vocabulary tables
    runtime: int = RUNTIME_BYTES + CONTEXT_BYTES  # Python, llama_cpp, llama.cpp's context
    staging: int = 0  # read in: the tensor being read before llama.cpp repacks it (loading only)
    mapped: bool = True  # the engine maps the file (else reads it in: see maps_file)

    @property
    def overhead(self) -> int:
        return self.repacked + self.compute + self.runtime

    @property
    def load(self) -> str:
        return "mmap" if self.mapped else "read"

    @property
    def loading(self) -> int:
        """While loading: no activations yet, but one tensor staged when the file is read in."""
        return self.weights + self.repacked + self.staging + self.kv_cache + self.runtime

    @property
    def answering(self) -> int:
        return self.weights + self.repacked + self.kv_cache + self.compute + self.runtime

    @property
    def total(self) -> int:
        """The process's peak: loading or answering, whichever needs more."""
        return max(self.loading, self.answering)

    def describe(self) -> str:
        return (
            f"{self.total / MB:.0f} MB (weights {self.weights / MB:.0f} MB + KV cache "
            f"{self.kv_cache / MB:.0f} MB + {self.overhead / MB:.0f} MB working memory)"
        )

    def as_dict(self) -> dict:
        keys = ("weights", "kv_cache", "repacked", "compute", "runtime", "staging", "total", "answering")
        return {k: getattr(self, k) for k in keys} | {"load": self.load}


def estimate(
    info,
    n_ctx: int,
    kv_type: str = "f16",
    cpu: str | None = None,
    n_ubatch: int | None = None,
    mapped: bool | None = None,
) -> MemoryEstimate:
    """Predict the peak memory of answering with a GGUF (research.models.gguf.GGUFInfo), before loading.

    Args:
        n_ctx: context size in tokens; kv_type: "f16", "q8_0", "q4_0" or "f32".
        cpu: the repack rules to apply (see REPACKED; default: this machine's).
        n_ubatch: prompt tokens evaluated at once, llama.cpp's micro-batch (the activations grow
            with it; default: as the engine chooses, see micro_batch).
        mapped: whether the file is mapped (default: as the engine chooses, see maps_file).
    """
    if kv_type not in KV_TYPES:
        raise KitError(f"unknown KV-cache type {kv_type!r}; choose from: {', '.join(KV_TYPES)}")
    names = {t.name: t for t in info.tensors}
    repacked = [t.n_bytes for t in repacked_tensors(info, cpu)]
    decided = plan(info, n_ctx, use_mmap=mapped, n_ubatch=n_ubatch, n_batch=n_ubatch or 512, cpu=cpu)
    mapped, n_ubatch = decided.mapped, decided.n_ubatch
    weights = info.file_size
    if mapped and "output.weight" in names and "token_embd.weight" in names:
        weights -= names["token_embd.weight"].n_bytes  # untied: a lookup reads one row per token
    compute = _file_compute_bytes(info, min(n_ubatch, n_ctx))
    # Unpadded: research.selection.projection reads estimate(info, 1).kv_cache as one position's bytes.
    # llama.cpp's rounding up to 256 cells adds at most 255 positions (2 % at a 1000 context).
    kv = model_kv_cache_bytes(info, n_ctx, kv_type, n_ubatch, pad=False)
    if mapped:
        return MemoryEstimate(weights, kv, sum(repacked), compute)
    return MemoryEstimate(weights, kv, 0, compute, staging=max(repacked, default=0), mapped=False)


def _file_compute_bytes(info, batch: int) -> int:
    """_compute_bytes with a GGUF header's width, feed-forward width, query width and vocabulary."""
    n_embd = info.embedding_length or 0
    n_ff = info.arch_value("feed_forward_length") or 4 * n_embd
    n_head = info.head_count or 1
    n_q = n_head * (info.arch_value("attention.key_length") or n_embd // n_head)
    n_vocab = next((t.shape[1] for t in info.tensors if t.name == "token_embd.weight"), 32000)
    n_ff = max(n_ff) if isinstance(n_ff, list) else n_ff
    return _compute_bytes(n_embd, n_ff, n_vocab, batch, _vocab_kind(info), n_q)


def _vocab_kind(info) -> tuple[str, int | None]:
    """("spm" or "other", merge rules) of a GGUF's tokenizer: what its vocabulary costs llama.cpp.
    A header that names no tokenizer counts as BPE with a merge a token (None)."""
    meta = getattr(info, "metadata", {})
    if "tokenizer.ggml.model" not in meta:
        return "other", None
    merges = meta.get("tokenizer.ggml.merges")
    n_merges = merges.length if hasattr(merges, "length") else len(merges) if isinstance(merges, list) else 0
    return ("spm" if meta["tokenizer.ggml.model"] == "llama" else "other"), n_merges


def vocab_bytes(n_vocab: int, kind: str = "other", n_merges: int | None = None) -> int:
    """llama.cpp's vocabulary tables: `kind` "spm" (SentencePiece) or "other" (BPE...), with
    `n_merges` merge rules (default: one a token, as BPE vocabularies have).

    `vocab_bytes(262144, "spm", 0)` -> 43132320 (Gemma 3's 262k SentencePiece tokens: 43 MB).
    """
    n_merges = n_vocab if n_merges is None else n_merges
    return VOCAB_BYTES_FIXED + n_vocab * VOCAB_BYTES_PER_TOKEN[kind] + n_merges * VOCAB_BYTES_PER_MERGE


def _compute_bytes(
    n_embd: int,
    n_ff: int,
    n_vocab: int,
    batch: int,
    vocab: tuple[str, int | None] = ("other", None),
    n_q: int | None = None,
) -> int:
    """Activations of one prompt batch (f32), the logits row and copy, the decode step's room for
    its sampler's candidates (research.engine.native: llama_token_data, 12 bytes a token),
    vocabulary tables.

    A token's activations: the residual stream and its norm, the queries and the attention's
    output (n_q wide: heads x head size, which Gemma 3 makes wider than the model, 1024 against
    640), and the feed-forward's gate, up and product. Measured here as the answer's peak over
    the loaded engine, micro-batch 512 against 128: 25.9 KB a token on a qwen2 shape (512 wide,
    ff 1536; formula 26.6), 16.2 KB on a gemma3 one (256 wide, queries 1024, ff 512; 16.4).
    """
    n_q = n_embd if n_q is None else n_q
    activations = batch * (2 * n_embd + 2 * n_q + 3 * n_ff) * 4
    return activations + n_vocab * (8 + 12) + vocab_bytes(n_vocab, *vocab)


#: The engine's memory budget is its file + its KV cache + this much working memory (runtime,
#: activations, vocabulary tables); bench --compare reports the peak against it.
WORKING_MEMORY_BUDGET = 100 * MB
#: micro_batch keeps the predicted working memory this much under the budget: the prediction's
#: error (within 2 % on the files measured, a few MB).
PREDICTION_MARGIN = 10 * MB
WORKING_MEMORY = WORKING_MEMORY_BUDGET - PREDICTION_MARGIN


def budget(file_bytes: int, kv_cache_bytes: int) -> int:
    """The engine's memory budget in bytes: file + KV cache + WORKING_MEMORY_BUDGET."""
    return file_bytes + kv_cache_bytes + WORKING_MEMORY_BUDGET


@dataclass(frozen=True)
class LoadPlan:
    """How the engine loads a file, decided here once for the engine and the prediction alike."""

    n_ctx: int  # the context used: what was asked, at most the model's trained context
    mapped: bool  # map the file (True) or read it in (see maps_file)
    n_ubatch: int  # prompt tokens llama.cpp evaluates at once (see micro_batch)


def plan(
    info,
    n_ctx: int,
    *,
    use_mmap: bool | None = None,
    n_ubatch: int | None = None,
    n_batch: int = 512,
    cpu: str | None = None,
) -> LoadPlan:
    """The load plan for a GGUF: None for use_mmap or n_ubatch means "as the kit decides"."""
    n_ctx = min(n_ctx, getattr(info, "context_length", None) or n_ctx)
    mapped = maps_file(info, cpu) if use_mmap is None else use_mmap
    return LoadPlan(n_ctx, mapped, min(n_ubatch or micro_batch(info, n_ctx), n_batch))


def micro_batch(info, n_ctx: int) -> int:
    """The largest micro-batch, 512, 256 or 128 prompt tokens, that keeps the engine's working
    memory within WORKING_MEMORY (at least 128).

    The activations of a prompt batch grow with the micro-batch and the model's width: 69 MB at
    512 tokens on Qwen2.5-1.5B's shape, more than the budget leaves. Smaller micro-batches cost
    those models nothing measurable here (llama-bench pp512 at -ub 128/256/512, 2 threads:
    0.5B shape 121/119/116 t/s, 1.5B shape 51/55/46); SmolLM2 loses 8 % at 128 (230 against 251)
    but keeps 512, whose activations are 14 MB.
    """
    runtime = MemoryEstimate.runtime  # the dataclass field's default
    for n in (512, 256):
        if _file_compute_bytes(info, min(n, n_ctx)) + runtime <= WORKING_MEMORY:
            return n
    return 128


def estimate_shape(
    file_bytes: int,
    quant: str,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head_kv: int,
    head_dim: int,
    vocab: int,
    tied: bool,
    n_ctx: int,
    kv_type: str = "f16",
    cpu: str = "arm-dotprod",
    n_ubatch: int = 512,
) -> MemoryEstimate:
    """estimate() for a model known only by its published size and shape (no file at hand).

    When the main type repacks on `cpu`, the engine reads the file in (see maps_file): every
    weight resident once, one feed-forward matrix staged while loading.
    """
    params = max(1, _params(n_layer, n_embd, n_ff, vocab, tied))
    embd = int(file_bytes * vocab * n_embd / params)
    main_type = quant.upper().removesuffix("_S").removesuffix("_M").removesuffix("_L")  # Q4_K_M -> Q4_K
    compute = _compute_bytes(n_embd, n_ff, vocab, min(n_ubatch, n_ctx))
    kv = kv_cache_bytes(n_ctx, n_layer, n_head_kv, head_dim, KV_TYPES[kv_type].bytes_per_value)
    if main_type in REPACKED[cpu]:
        staging = int(file_bytes * n_embd * n_ff / params)
        return MemoryEstimate(file_bytes, kv, 0, compute, staging=staging, mapped=False)
    return MemoryEstimate(file_bytes - (0 if tied else embd), kv, 0, compute)


def _params(n_layer: int, n_embd: int, n_ff: int, vocab: int, tied: bool) -> int:
    """Parameters of a llama-style model: 4 attention + 3 feed-forward matrices a layer."""
    return n_layer * (4 * n_embd * n_embd + 3 * n_embd * n_ff) + vocab * n_embd * (1 if tied else 2)


def check_fits(need: MemoryEstimate, what: str) -> None:
    """Raise KitError when `need` does not fit in the memory this process may still use."""
    have, limiter = device.available_bytes()
    if need.total > have:
        raise KitError(
            f"{what} needs about {need.describe()}, but only {have / MB:.0f} MB is free "
            f"under {limiter}; choose a smaller model or quantization, or a shorter context (--ctx)"
        )

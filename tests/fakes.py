"""A scripted stand-in for llama.cpp: characters are tokens, answers come from a script."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

EOG = 0
#: A scripted answer that repeats the question it answers ("You asked: ...").
ECHO = "<echo>"


class FakeBackend:
    """Backend that 'generates' scripted answers, one character per token.

    With `logprobs` (one per answer, like `answers`) it also keeps a confidence trace as
    llama_backend does: every token of that answer gets that log-probability and entropy
    -logprob; without, it keeps none (`trace` stays empty), as a backend with signals off.
    """

    def __init__(
        self,
        answers: Sequence[str] = ("Paris.",),
        n_ctx: int = 256,
        delay: float = 0.0,
        logprobs: Sequence[float] | None = None,
    ):
        self.answers = list(answers)
        self.logprobs = list(logprobs) if logprobs is not None else None
        self.trace: list[tuple[float, float]] = []
        self.signal_s = 0.0
        # The question-side signals, as llama_backend reads them while the prompt is evaluated:
        # each character of the watched span gets log-probability -3 if upper case (a name the
        # "model" finds rare), else -0.5.
        self.watch: tuple[int, int] | None = None
        self.question_trace: list[float] = []
        self.question_s = 0.0
        self.decode_s = self.sample_s = 0.0  # a script decodes and samples in no time
        self.native = False  # no C step: a script has no llama.cpp to decode through
        self.n_ctx, self.n_threads, self.delay = n_ctx, 1, delay
        # The rest of research.engine.types.Backend, as a small CPU build of llama.cpp would say it.
        self.n_batch = self.n_ubatch = 512
        self.kv_type, self.flash_attn, self.extra_bufts, self.mapped = "f16", True, True, True
        self.huge_pages_mb = 0.0  # mapped: nothing read in
        self.add_bos, self.bos_text, self.eos_text = False, "", ""
        self.control_texts: frozenset[str] = frozenset()
        self.prompt_eval_s = self.first_sample_s = 0.0
        self.prompts: list[str] = []
        self.calls = 0
        self.resets = 0  # reset() calls: evaluation forgets the cache before each question
        self.active = 0  # generations running at once: must never exceed 1
        self.max_active = 0

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token: int) -> bytes:
        return chr(token).encode()

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        return 0

    def reset(self) -> None:
        self.resets += 1

    def generate(self, tokens: Sequence[int], sampling) -> Iterator[int]:
        prompt = "".join(chr(t) for t in tokens)
        self.prompts.append(prompt)
        answer = self.answers[self.calls % len(self.answers)]
        lp = self.logprobs[self.calls % len(self.logprobs)] if self.logprobs else None
        self.trace = []
        start, end = self.watch or (0, 0)
        self.question_trace = [-3.0 if chr(t).isupper() else -0.5 for t in tokens[max(1, start) : end]]
        if answer == ECHO:  # an answer that names its own question: a mix-up shows at once
            question = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
            answer = f"You asked: {question}"
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for c in answer:
                if self.delay:
                    time.sleep(self.delay)
                if lp is not None:
                    self.trace.append((lp, -lp))
                yield ord(c)
            while True:
                if lp is not None:
                    self.trace.append((-0.01, 0.01))
                yield EOG
        finally:
            self.active -= 1

    def teacher_force(self, tokens: Sequence[int], forced: Sequence[int]) -> list[tuple[float, float]]:
        """A scripted trace for a forced answer: the first logprob, or -1, per token."""
        lp = self.logprobs[0] if self.logprobs else -1.0
        return [(lp, -lp)] * len(forced)

    def next_logprobs(self, tokens: Sequence[int], candidates: Sequence[str]) -> list[float]:
        """P(True)'s A and B: "A" is likelier the higher the first scripted logprob."""
        lp = self.logprobs[0] if self.logprobs else -1.0
        return [lp, -1.0 - lp][: len(candidates)]

    def close(self) -> None:
        pass


def tiny_gguf(path, tensor: str = "token_embd.weight") -> bytes:
    """A well-formed GGUF 'llama' holding one 4x32 F32 tensor (128 parameters); no usable model."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_tensor(tensor, np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def _bundled_tokenizer(w, n_vocab: int | None = None, user_defined: tuple[str, ...] = ()) -> int:
    """Copy the bundled SmolLM2 tokenizer and chat template into GGUF writer `w`, padded to
    `n_vocab` tokens with tokens and merges of their own, then `user_defined` tokens (llama.cpp's
    USER_DEFINED type: recognized in text even when special tokens are not); returns the
    vocabulary size."""
    import gguf

    from research.models.catalog import resolve

    src = gguf.GGUFReader(str(resolve(None).path))
    base = len(src.fields["tokenizer.ggml.tokens"].data)
    pad = max(0, (n_vocab or base) - base - len(user_defined))
    extra = {  # per-token arrays grow with padding; merges "Ġp012 345" make "Ġp012345"
        "tokenizer.ggml.tokens": [f"Ġp{i // 1000:03d}{i % 1000:03d}" for i in range(pad)] + [*user_defined],
        "tokenizer.ggml.token_type": [1] * pad + [int(gguf.TokenType.USER_DEFINED)] * len(user_defined),
        "tokenizer.ggml.scores": [0.0] * (pad + len(user_defined)),
        "tokenizer.ggml.merges": [f"Ġp{i // 1000:03d} {i % 1000:03d}" for i in range(pad)],
    }
    pad += len(user_defined)
    for field in src.fields.values():  # the SmolLM2 tokenizer and chat template, as they are
        if field.name.startswith("tokenizer."):
            value = field.contents()
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            if pad and field.name in extra:
                value = list(value) + extra[field.name]
            w.add_key_value(field.name, value, vtype, sub_type=sub)
    n_vocab = base + pad
    return n_vocab


def _sentencepiece_tokenizer(w, n_vocab: int | None = None) -> int:
    """A SentencePiece vocabulary laid out as Gemma's is (tokenizer.ggml.model "llama": pieces and
    scores, no merges; <pad> <eos> <bos> <unk>, byte pieces <0x00>..<0xFF> for byte fallback),
    with the bundled model's pieces ("Ġ" read as "▁") and ChatML template, padded to `n_vocab`
    with pieces of its own; returns the vocabulary size. llama.cpp holds such a vocabulary in
    less memory a token than a BPE one (no merge ranks)."""
    import gguf

    from research.models.catalog import resolve

    src = gguf.GGUFReader(str(resolve(None).path))
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<|im_start|>", "<|im_end|>"]
    pieces = special + [f"<0x{b:02X}>" for b in range(256)]
    seen = set(pieces)
    for text in src.fields["tokenizer.ggml.tokens"].contents():
        piece = text.replace("Ġ", "▁")
        if piece not in seen and not piece.startswith("<"):
            seen.add(piece)
            pieces.append(piece)
    base = len(pieces)
    pieces += [f"▁p{i // 1000:03d}{i % 1000:03d}" for i in range(max(0, (n_vocab or base) - base))]
    n_fixed = len(special) + 256
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * n_fixed + [-float(i) for i in range(len(pieces) - n_fixed)])  # rarer later
    w.add_token_types([3] * len(special) + [6] * 256 + [1] * (len(pieces) - n_fixed))  # control, byte, normal
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_bos_token_id(2)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    w.add_chat_template(src.fields["tokenizer.chat_template"].contents())
    return len(pieces)


def random_model_gguf(
    path,
    arch: str = "qwen2",
    n_layer: int = 4,
    n_embd: int = 256,
    n_ff: int = 768,
    n_head: int = 4,
    n_head_kv: int = 1,
    seed: int = 0,
    n_vocab: int | None = None,
    user_defined: tuple[str, ...] = (),
):
    """A loadable F16 GGUF of another architecture with random weights and the bundled tokenizer
    (with `user_defined` tokens added: _bundled_tokenizer).

    For speed and robustness only: llama.cpp runs it like any model of that architecture
    (qwen2: biased q/k/v projections, grouped-query attention), but its answers are noise.
    `n_vocab` pads the tokenizer to a larger vocabulary (Qwen2.5: 151936, Llama 3: 128256)
    with tokens and merges of their own, for the memory a large vocabulary takes.
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"random-{arch}-{n_layer}x{n_embd}")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = _bundled_tokenizer(w, n_vocab, user_defined)
    head_dim = n_embd // n_head

    def t(name, *shape, scale=0.02, dtype=np.float16):
        w.add_tensor(name, (rng.standard_normal(shape[::-1]) * scale).astype(dtype))

    t("token_embd.weight", n_embd, n_vocab)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(p + "attn_q.weight", n_embd, n_embd)
        t(p + "attn_k.weight", n_embd, n_head_kv * head_dim)
        t(p + "attn_v.weight", n_embd, n_head_kv * head_dim)
        if arch == "qwen2":
            for name, n in (
                ("attn_q", n_embd),
                ("attn_k", n_head_kv * head_dim),
                ("attn_v", n_head_kv * head_dim),
            ):
                w.add_tensor(p + name + ".bias", np.zeros(n, dtype=np.float32))
        t(p + "attn_output.weight", n_embd, n_embd)
        t(p + "ffn_gate.weight", n_embd, n_ff)
        t(p + "ffn_up.weight", n_embd, n_ff)
        t(p + "ffn_down.weight", n_ff, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


#: Gemma 3 270M's shape (google/gemma-3-270m config.json): 18 layers 640 wide, 4 query heads and
#: 1 KV head of size 256, feed-forward 2048, a 262,144-token vocabulary, tied embeddings, and
#: sliding-window attention (512 tokens) on 5 of every 6 layers.
GEMMA3_270M = dict(n_layer=18, n_embd=640, n_ff=2048, n_head=4, n_head_kv=1, head_dim=256, n_vocab=262144)


def gemma3_model_gguf(
    path,
    n_layer: int = 7,
    n_embd: int = 256,
    n_ff: int = 512,
    n_head: int = 4,
    n_head_kv: int = 1,
    head_dim: int = 256,
    sliding_window: int = 512,
    seed: int = 0,
    n_vocab: int | None = None,
    tokenizer: str = "spm",
    ends_at_once: bool = False,
):
    """A loadable F16 GGUF of llama.cpp's gemma3 architecture with random weights.

    Its tokenizer is a SentencePiece one as Gemma's (`tokenizer="spm"`, see
    _sentencepiece_tokenizer) or the bundled BPE one (`"bpe"`), padded to `n_vocab` tokens.
    `ends_at_once` makes a model that, like a base model at a chat prompt, answers with its
    end-of-text token first: every token's embedding lies along one direction and that token's
    is twice as long, so with tied embeddings its logit is twice any other's.

    What sets gemma3 apart for memory and speed: a head size (attention.key_length and
    value_length) larger than width / heads, sliding-window attention on every layer but each
    sixth (llama.cpp's default pattern; layers 5, 11, 17 attend globally), query and key norms,
    norms after attention and after the feed-forward, and no output matrix (tied embeddings).
    The default 7 layers hold both kinds of layer. Keys and tensors as llama.cpp 0c1e570 reads
    them (src/models/gemma3.cpp: load_arch_hparams, load_arch_tensors).
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name(f"random-gemma3-{n_layer}x{n_embd}")
    w.add_context_length(32768)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_sliding_window(sliding_window)
    w.add_rope_freq_base(1e6)
    w.add_rope_freq_base_swa(1e4)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = (_sentencepiece_tokenizer if tokenizer == "spm" else _bundled_tokenizer)(w, n_vocab)
    q, kv = n_head * head_dim, n_head_kv * head_dim

    def t(name, *shape, scale=0.02):
        w.add_tensor(name, (rng.standard_normal(shape[::-1]) * scale).astype(np.float16))

    def norm(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    if ends_at_once:  # dominant in the residual stream (the layers' outputs are normed to ~1)
        embd = rng.standard_normal(n_embd) + rng.standard_normal((n_vocab, n_embd)) * 0.1
        embd[1 if tokenizer == "spm" else 2] *= 2  # the end-of-text token (<eos>, or <|im_end|>)
        w.add_tensor("token_embd.weight", embd.astype(np.float16))
    else:
        t("token_embd.weight", n_embd, n_vocab)  # also the output matrix: there is no output.weight
    norm("output_norm.weight", n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", n_embd)
        t(p + "attn_q.weight", n_embd, q)
        t(p + "attn_k.weight", n_embd, kv)
        t(p + "attn_v.weight", n_embd, kv)
        norm(p + "attn_q_norm.weight", head_dim)
        norm(p + "attn_k_norm.weight", head_dim)
        t(p + "attn_output.weight", q, n_embd)
        norm(p + "post_attention_norm.weight", n_embd)
        norm(p + "ffn_norm.weight", n_embd)
        t(p + "ffn_gate.weight", n_embd, n_ff)
        t(p + "ffn_up.weight", n_embd, n_ff)
        t(p + "ffn_down.weight", n_ff, n_embd)
        norm(p + "post_ffw_norm.weight", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path

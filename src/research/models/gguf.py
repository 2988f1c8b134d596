"""Bounded, pure-Python reader for GGUF headers: check an untrusted model before llama.cpp does.

Hostile GGUF files (CVE-2024-21802, CVE-2024-23605, CVE-2025-53630) carry lengths and counts
that a reader believes. Here every count and length is checked against the bytes left in the
file before it is acted on, long arrays (vocabularies, merges) are walked but not kept, and every
problem becomes one `KitError` line. The `gguf` package is used only for its constant tables.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import gguf

from research.errors import KitError
from research.units import MB

MAX_KV = 1 << 16  # real models carry 20-60 keys; the cap bounds the loop on a hostile count
MAX_TENSORS = 1 << 16  # the largest published models have a few thousand tensors
MAX_ARRAY_DEPTH = 3  # the spec allows nested arrays; no real model nests them at all
MAX_SHORT_ARRAY = 64  # longer arrays are described (ArrayInfo), not materialised
MAX_WALKED = 1 << 22  # strings walked in arrays: 4x the largest vocabulary plus merges; ~0.7 s
MAX_HELD = 8 << 20  # estimated bytes of Python objects kept from a header; real ones need <1 MiB
MAX_DIMS = 4  # GGML_MAX_DIMS in llama.cpp
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT, used when general.alignment is absent

VT = gguf.GGUFValueType
# Struct codes by GGUFValueType number; 8 (STRING) and 9 (ARRAY) are read by hand.
_SCALAR = {VT(code): c for code, c in enumerate("BbHhIif?..Qqd") if c != "."}
_STRUCT = {t: struct.Struct("<" + c) for t, c in _SCALAR.items()}
_U32, _U64 = _STRUCT[VT.UINT32], _STRUCT[VT.UINT64]
_REFETCH = "the file is damaged or incomplete; download it again"


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to keep: its item type name and its length."""

    item_type: str
    length: int


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor's header entry; `shape` is in GGML order (innermost dimension first)."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    ggml_type: int
    offset: int  # relative to GGUFInfo.data_offset
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says, already validated against the file's size."""

    path: Path
    file_size: int
    version: int
    alignment: int
    data_offset: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]

    def _typed(self, key: str, kind: type) -> Any:
        value = self.metadata.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    def arch_value(self, key: str) -> Any:
        """metadata[f"{architecture}.{key}"], or None: "context_length" -> 8192."""
        return self.metadata.get(f"{self.architecture}.{key}") if self.architecture else None

    def _arch_int(self, key: str) -> int | None:
        value = self.arch_value(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    architecture = property(lambda self: self._typed("general.architecture", str))
    name = property(lambda self: self._typed("general.name", str))
    chat_template = property(lambda self: self._typed("tokenizer.chat_template", str))
    file_type = property(lambda self: self._typed("general.file_type", int))
    context_length = property(lambda self: self._arch_int("context_length"))
    block_count = property(lambda self: self._arch_int("block_count"))
    embedding_length = property(lambda self: self._arch_int("embedding_length"))
    head_count = property(lambda self: self._arch_int("attention.head_count"))

    @property
    def head_count_kv(self) -> int | None:
        kv = self._arch_int("attention.head_count_kv")
        return self.head_count if kv is None else kv

    @property
    def file_type_name(self) -> str | None:
        """general.file_type as a name: 3 -> "Q4_1", 0 -> "F32"; None if absent or unknown."""
        try:
            name = gguf.LlamaFileType(self.file_type).name
        except ValueError:
            return None
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")

    @cached_property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @cached_property
    def type_mix(self) -> dict[str, dict]:
        """Per tensor type, most bytes first: {"Q4_1": {"tensors": n, "params": n, "bytes": n}}."""
        mix: dict[str, dict] = {}
        for t in self.tensors:
            row = mix.setdefault(t.type_name, {"tensors": 0, "params": 0, "bytes": 0})
            row["tensors"] += 1
            row["params"] += t.n_elements
            row["bytes"] += t.n_bytes
        return dict(sorted(mix.items(), key=lambda kv: -kv[1]["bytes"]))

    @property
    def bits_per_weight(self) -> float:
        n_bytes = sum(t.n_bytes for t in self.tensors)
        return 8 * n_bytes / self.n_params if self.n_params else 0.0


def _show(value: Any, limit: int = 60) -> str:
    """repr() of a value from the file, cut short: one line whatever bytes it holds."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Reader:
    """A cursor over the mapped file that refuses to read, or believe, past its end."""

    def __init__(self, buf: mmap.mmap, size: int, label: str) -> None:
        self.buf, self.size, self.pos, self.label = buf, size, 0, label
        self.held_left, self.walk_left = MAX_HELD, MAX_WALKED

    def fail(self, message: str) -> NoReturn:
        raise KitError(f"{self.label}: {message}".replace("\n", " ").replace("\r", " "))

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            self.fail(
                f"truncated: {what} at byte {self.pos} needs {n} bytes but the file has "
                f"{self.size} bytes; {_REFETCH}"
            )

    def read(self, fmt: struct.Struct, what: str) -> Any:
        self.need(fmt.size, what)
        value = fmt.unpack_from(self.buf, self.pos)[0]
        self.pos += fmt.size
        return value

    def hold(self, n_bytes: int) -> None:
        """Account for memory the parsed header keeps, so no input can make it grow large."""
        self.held_left -= n_bytes
        if self.held_left < 0:
            self.fail(f"the header would take over {MAX_HELD >> 20} MiB to hold; not a model file")

    def string(self, what: str) -> bytes:
        n = self.read(_U64, f"length of {what}")
        self.need(n, f"{what} of {n} bytes")
        self.hold(n + 64)  # a str object's own size
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def text(self, what: str) -> str:
        raw = self.string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8 ({_show(raw)}); {_REFETCH}")

    def value_type(self, what: str) -> VT:
        code = self.read(_U32, f"value type of {what}")
        try:
            return VT(code)
        except ValueError:
            self.fail(f"unknown value type {code} for {what}; {_REFETCH}")

    def value(self, vtype: VT, what: str, depth: int = 0) -> Any:
        if vtype in _STRUCT:
            value = self.read(_STRUCT[vtype], what)
            return bool(value) if vtype == VT.BOOL else value
        if vtype == VT.STRING:
            return self.string(what).decode("utf-8", "replace")
        if depth >= MAX_ARRAY_DEPTH:
            self.fail(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH}; {_REFETCH}")
        itype = self.value_type(f"items of {what}")
        n = self.read(_U64, f"length of {what}")
        item_size = _STRUCT[itype].size if itype in _STRUCT else 8 if itype == VT.STRING else 12
        if n * item_size > self.size - self.pos:
            self.fail(f"{what} claims {n} items but {self.size - self.pos} bytes are left; {_REFETCH}")
        # Strings and arrays are walked one by one; an array item takes the slow general path.
        self.walk_left -= 0 if itype in _STRUCT else n if itype == VT.STRING else 64 * n
        if self.walk_left < 0:
            self.fail(f"{what} makes the header's arrays larger than any model's; not a model")
        if n <= MAX_SHORT_ARRAY and itype in _STRUCT:
            self.hold(40 * n)  # an int or float object and its list slot
            values = struct.unpack_from(f"<{n}{_SCALAR[itype]}", self.buf, self.pos)
            self.pos += n * item_size
            return [bool(v) for v in values] if itype == VT.BOOL else list(values)
        if n <= MAX_SHORT_ARRAY or itype == VT.ARRAY:
            items = [self.value(itype, what, depth + 1) for _ in range(n)]
            return items if n <= MAX_SHORT_ARRAY else ArrayInfo(itype.name, n)
        if itype in _STRUCT:
            self.pos += n * item_size  # already checked against the bytes left
        else:
            self.skip_strings(n, what)
        return ArrayInfo(itype.name, n)

    def skip_strings(self, n: int, what: str) -> None:
        """Step over n strings without decoding them: the vocabulary of a real model is 50-250k."""
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        for _ in range(n):
            if pos + 8 > size:
                break
            pos += 8 + unpack(buf, pos)[0]
        else:
            if pos <= size:
                self.pos = pos
                return
        self.fail(f"truncated: the strings of {what} run past the end of the file; {_REFETCH}")


def _not_gguf(head: bytes) -> str:
    start = head.lstrip().lower()
    if start.startswith(b"<"):
        return "not a GGUF file: it is an HTML page saved as .gguf? download it again"
    if start.startswith(b"version https://git-lfs"):
        return "not a GGUF file: it is a Git LFS pointer; download the real file (git lfs pull)"
    # Never the bytes themselves: whatever file was named (a key, /etc/passwd) must not be echoed.
    kind = "text" if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64]) else "binary data"
    return f"not a GGUF file (it holds {kind}, not the GGUF magic); check the path or download again"


def read_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Read and validate a GGUF file's header; raise KitError with one line on any problem."""
    path = Path(path)
    if not path.exists():
        raise KitError(f"no such file: {path}")
    if path.is_dir():
        raise KitError(f"{path} is a directory, not a GGUF file; pass the .gguf file inside it")
    if not path.is_file():
        raise KitError(f"{path} is not a regular file; pass a .gguf model file")
    try:
        f = path.open("rb")
    except OSError as e:
        raise KitError(f"cannot read {path}: {e.strerror or e}") from e
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise KitError(f"{path.name}: the file is empty (0 bytes); download it again")
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:  # e.g. no address space for a huge file
            raise KitError(f"cannot map {path} into memory: {e}") from e
        with buf:
            return _parse(path, buf, size)


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFInfo:
    r = _Reader(buf, size, path.name)
    if buf[:4] != b"GGUF":
        r.fail(_not_gguf(buf[:64]))
    r.pos = 4
    version = r.read(_U32, "version")
    if version not in (2, 3):
        if int.from_bytes(version.to_bytes(4, "little"), "big") in (2, 3):
            r.fail("big-endian GGUF; this kit reads little-endian files only, get that build")
        if version == 1:
            r.fail("GGUF version 1 is obsolete; download a file made by a current llama.cpp")
        r.fail(f"unsupported GGUF version {version}; this kit reads versions 2 and 3")
    n_tensors = r.read(_U64, "tensor count")
    n_kv = r.read(_U64, "metadata count")
    left = size - r.pos
    if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
        r.fail(f"{n_kv} keys and {n_tensors} tensors is more than this kit accepts; not a model")
    # Smallest entries: key length, type, 1-byte value; name length, n_dims, type, offset.
    if n_kv * 13 > left:
        r.fail(f"impossible metadata count {n_kv} for a file of {size} bytes; {_REFETCH}")
    if n_tensors * 24 > left:
        r.fail(f"impossible tensor count {n_tensors} for a file of {size} bytes; {_REFETCH}")

    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = r.text(f"metadata key {i}")
        if key in metadata:
            r.fail(f"duplicate metadata key {_show(key)}; {_REFETCH}")
        metadata[key] = r.value(r.value_type(f"key {_show(key)}"), f"key {_show(key)}")

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        r.fail(f"general.alignment {_show(alignment)} is not a power of two; {_REFETCH}")

    tensors = []
    names: set[str] = set()
    for i in range(n_tensors):
        tensors.append(_tensor(r, buf, i, names, alignment))
    data_offset = -(-r.pos // alignment) * alignment

    end = 0
    for t in sorted(tensors, key=lambda t: t.offset):
        if t.offset < end:
            r.fail(f"tensor {_show(t.name)} overlaps the tensor before it; {_REFETCH}")
        end = t.offset + t.n_bytes
        if data_offset + end > size:
            r.fail(
                f"truncated: tensor {_show(t.name)} ends at byte {data_offset + end} but the file "
                f"has {size} bytes; the download is incomplete, fetch it again"
            )
    return GGUFInfo(path, size, version, alignment, data_offset, metadata, tuple(tensors))


def _tensor(r, buf, i: int, names: set[str], alignment: int) -> TensorInfo:
    """Tensor `i`'s entry, every field checked against the file (`names`: those seen so far)."""
    name = r.text(f"name of tensor {i}")
    label = f"tensor {_show(name)}"
    if name in names:
        r.fail(f"duplicate tensor name {_show(name)}; {_REFETCH}")
    names.add(name)
    r.hold(320)  # the TensorInfo, its shape and its place in the lists
    n_dims = r.read(_U32, f"dimension count of {label}")
    if n_dims > MAX_DIMS:
        r.fail(f"{label} has {n_dims} dimensions (most is {MAX_DIMS}); {_REFETCH}")
    r.need(8 * n_dims, f"shape of {label}")
    shape = struct.unpack_from(f"<{n_dims}Q", buf, r.pos)
    r.pos += 8 * n_dims
    code = r.read(_U32, f"type of {label}")
    offset = r.read(_U64, f"offset of {label}")
    if any(d == 0 or d >= 1 << 63 for d in shape):
        r.fail(f"{label} has a zero or negative dimension {shape}; {_REFETCH}")
    n_elements = 1
    for d in shape:
        n_elements *= d
    if n_elements >= 1 << 63:
        r.fail(f"{label} has {n_elements} elements, more than 64 bits can count; {_REFETCH}")
    try:
        qtype = gguf.GGMLQuantizationType(code)
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        r.fail(f"{label} has unknown type {code}; {_REFETCH} (or upgrade the gguf package)")
    row = shape[0] if shape else 1
    if row % block:
        r.fail(f"{label} has rows of {row}, not whole {qtype.name} blocks of {block}; {_REFETCH}")
    if offset % alignment:
        r.fail(f"{label} starts at offset {offset}, not a multiple of {alignment}; {_REFETCH}")
    n_bytes = n_elements // block * block_bytes
    return TensorInfo(name, shape, qtype.name, code, offset, n_elements, n_bytes)


_EXTRA_KEYS = (
    "general.basename general.size_label general.finetune general.organization general.license "
    "general.quantization_version tokenizer.ggml.model tokenizer.ggml.pre"
).split()
_SUMMARY_ATTRS = (
    "version architecture name n_params file_type file_type_name type_mix context_length "
    "block_count embedding_length head_count head_count_kv"
).split()


def _plain(value: Any) -> Any:
    """A metadata value as JSON-ready data: ArrayInfo -> {"item_type", "length"}."""
    if isinstance(value, ArrayInfo):
        return {"item_type": value.item_type, "length": value.length}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def summarize(info: GGUFInfo) -> dict:
    """A JSON-ready summary for `inspect --json`; absent values are None."""
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    summary = {"path": str(info.path), "file_size": info.file_size}
    summary |= {attr: getattr(info, attr) for attr in _SUMMARY_ATTRS}
    summary |= {
        "bits_per_weight": round(info.bits_per_weight, 3),
        "has_chat_template": info.chat_template is not None,
        "chat_template_chars": len(info.chat_template or ""),
        "vocab_size": tokens.length if isinstance(tokens, ArrayInfo) else None,
        "n_tensors": len(info.tensors),
        "n_kv": len(info.metadata),
    }
    return summary | {key: _plain(info.metadata.get(key)) for key in _EXTRA_KEYS}


def _count(n: float) -> str:
    """A parameter count for people: 134515008 -> "134.5 M"."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(int(n))


def format_summary(info: GGUFInfo) -> str:
    """Aligned `key: value` lines and a table of the tensor-type mix, for `inspect`."""
    s = summarize(info)
    heads = f"{s['head_count']} (kv {s['head_count_kv']})"
    template = f"yes, {s['chat_template_chars']} chars" if s["has_chat_template"] else "none"
    rows = [
        ("file", s["path"]),
        ("size", f"{info.file_size / MB:.1f} MB ({info.file_size} bytes)"),
        ("format", f"GGUF v{info.version}, {s['n_tensors']} tensors, {s['n_kv']} keys"),
        ("architecture", s["architecture"]),
        ("name", s["name"]),
        ("parameters", _count(s["n_params"])),
        ("file type", s["file_type_name"] or s["file_type"]),
        ("bits per weight", f"{info.bits_per_weight:.2f}"),
        ("context length", s["context_length"]),
        ("layers", s["block_count"]),
        ("embedding length", s["embedding_length"]),
        ("attention heads", heads),
        ("tokenizer", f"{s['tokenizer.ggml.model']}, {s['vocab_size'] or '?'} tokens"),
        ("chat template", template),
    ]
    lines = [f"{key + ':':<18}{' '.join(str(value).split())}" for key, value in rows]
    total = sum(row["bytes"] for row in info.type_mix.values()) or 1
    lines += ["", f"{'type':<10}{'tensors':>8}{'params':>12}{'bytes':>9}{'bits/weight':>13}"]
    for name, row in info.type_mix.items():
        bits = 8 * row["bytes"] / row["params"]
        lines.append(
            f"{name:<10}{row['tensors']:>8}{_count(row['params']):>12}"
            f"{100 * row['bytes'] / total:>8.1f}%{bits:>13.2f}"
        )
    return "\n".join(lines)

"""Read a GGUF header (key/values and tensor infos) without touching tensor data.

A hand-rolled reader rather than `gguf.GGUFReader`: that one memory-maps the file and builds
a numpy view per field, which costs seconds on a real vocabulary (DeepSeek-V3 has 129,280
token strings). Here big arrays are skipped, not decoded, and every short read becomes a
`ModelError` naming the file and offset.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from qpatch.errors import ModelError
from qpatch.gguf.catalogue import T as GGMLQuantizationType
from qpatch.gguf.catalogue import decode_type

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
KEEP_ARRAY_MAX = 4096  # arrays longer than this are skipped (tokenizer vocabularies)

# GGUF value types -> struct format (scalars)
_SCALAR = {k: struct.Struct(f) for k, f in {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                                             10: "<Q", 11: "<q", 12: "<d"}.items()}
_U32, _U64 = _SCALAR[4], _SCALAR[10]
_WINDOW = 1 << 20
_STRING, _ARRAY = 8, 9

SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml ne[] order: ne[0] is the row length
    type: GGMLQuantizationType
    shard: int = 0
    offset: int = 0


@dataclass
class GGUFHeader:
    path: Path
    version: int
    kv: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # key -> (element type, length) of arrays not decoded
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0


class _Reader:
    """Front-to-back reads through a window of the file held in memory.

    A vocabulary is hundreds of thousands of short strings; walking their lengths in a bytes
    window (`skip_strings`) is ~10x faster than a read/seek per string.
    """

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "rb", buffering=0)
        self.size = os.fstat(self.f.fileno()).st_size
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0  # read position in buf (may run past its end after a skip)

    def close(self):
        self.f.close()

    def tell(self) -> int:
        return self.base + self.pos

    def _window(self, n: int) -> None:
        """Re-read the window at the current position, at least n bytes when the file has them."""
        self.base += self.pos
        self.pos = 0
        self.f.seek(self.base)
        self.buf = self.f.read(max(n, _WINDOW))
        if len(self.buf) < n:
            raise ModelError(f"{self.path}: truncated GGUF header (wanted {n} bytes at offset {self.base})")

    def read(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self._window(n)
        p = self.pos
        self.pos = p + n
        return self.buf[p:p + n]

    def unpack(self, st: struct.Struct):
        if self.pos + st.size > len(self.buf):
            self._window(st.size)
        p = self.pos
        self.pos = p + st.size
        return st.unpack_from(self.buf, p)[0]

    def skip(self, n: int):
        if self.tell() + n > self.size:
            raise ModelError(f"{self.path}: truncated GGUF header (field runs past end of file at {self.size})")
        self.pos += n

    def skip_strings(self, n: int):
        buf, pos, end, u64 = self.buf, self.pos, len(self.buf) - 8, _U64.unpack_from
        for _ in range(n):
            if pos > end:
                self.pos = pos
                self._window(8)
                buf, pos, end = self.buf, 0, len(self.buf) - 8
            pos += 8 + u64(buf, pos)[0]
        self.pos = pos
        if self.tell() > self.size:
            raise ModelError(f"{self.path}: truncated GGUF header (field runs past end of file at {self.size})")

    def string(self) -> str:
        n = self.unpack(_U64)
        if n > self.size:
            raise ModelError(f"{self.path}: corrupt GGUF header (string of {n} bytes)")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str, header: GGUFHeader):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.unpack(_U32)
            n = self.unpack(_U64)
            if n > KEEP_ARRAY_MAX:
                header.skipped[key] = (etype, n)
                if etype in _SCALAR:
                    self.skip(n * _SCALAR[etype].size)
                elif etype == _STRING:
                    self.skip_strings(n)
                else:
                    raise ModelError(f"{self.path}: unsupported nested array in '{key}'")
                return None
            return [self.value(etype, key, header) for _ in range(n)]
        raise ModelError(f"{self.path}: corrupt GGUF header (value type {vtype} for '{key}')")


def read_header(path: str | os.PathLike, family: str | None = None) -> GGUFHeader:
    """A GGUF file's key/values and tensor infos; tensor type ids are read in `family`'s numbering
    (ggml ids differ between families), or in the first family that has the id when None."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    r = _Reader(path)
    try:
        magic = r.read(4) if r.size >= 4 else b""
        if magic != MAGIC:
            raise ModelError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        version = r.unpack(_U32)
        if version not in (2, 3):
            raise ModelError(f"{path}: unsupported GGUF version {version}")
        n_tensors = r.unpack(_U64)
        n_kv = r.unpack(_U64)
        h = GGUFHeader(path=path, version=version)
        for _ in range(n_kv):
            key = r.string()
            vtype = r.unpack(_U32)
            h.kv[key] = r.value(vtype, key, h)
        for _ in range(n_tensors):
            name, shape, tval, offset = _tensor_info(r, path)
            try:
                ttype = decode_type(tval, family)
            except KeyError:
                of = f" in pin family {family}" if family else ""
                raise ModelError(f"{path}: tensor '{name}' has unknown ggml type id {tval}{of}") from None
            h.tensors.append(TensorInfo(name, shape, ttype, 0, offset))
        align = int(h.kv.get("general.alignment", DEFAULT_ALIGNMENT))
        pos = r.tell()
        h.data_offset = (pos + align - 1) // align * align
        _check_data_fits(h, r.size)
        return h
    finally:
        r.close()


def _tensor_info(r: _Reader, path: Path) -> tuple[str, tuple[int, ...], int, int]:
    """One tensor info: name, ne[], the type id as stored, the offset in the data section."""
    name = r.string()
    n_dims = r.unpack(_U32)
    if n_dims > 4:
        raise ModelError(f"{path}: corrupt tensor info for '{name}' ({n_dims} dims)")
    shape = tuple(r.unpack(_U64) for _ in range(n_dims))
    return name, shape, r.unpack(_U32), r.unpack(_U64)


def _check_data_fits(h: GGUFHeader, size: int):
    from qpatch.gguf.catalogue import tensor_bytes

    end = h.data_offset
    last = None
    for t in h.tensors:
        try:
            nbytes = tensor_bytes(t.type, t.shape)
        except KeyError:
            continue
        if h.data_offset + t.offset + nbytes > end:
            end = h.data_offset + t.offset + nbytes
            last = t.name
    if end > size:
        raise ModelError(
            f"{h.path}: truncated GGUF file: {size} bytes, but tensor data runs to {end} bytes"
            + (f" (tensor '{last}')" if last else "")
        )


def shard_paths(path: Path, count: int) -> list[Path]:
    """All shard paths of a split model given its first shard (llama_split_path naming)."""
    m = SPLIT_RE.match(path.name)
    if not m:
        raise ModelError(f"{path}: header says split.count={count} but the name is not "
                         f"'<prefix>-00001-of-{count:05d}.gguf'")
    prefix = m.group("prefix")
    return [path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def read_model_headers(path: str | os.PathLike, family: str | None = None) -> list[GGUFHeader]:
    """The header of a model, and of every further shard of a split model (first shard given)."""
    path = Path(path)
    first = read_header(path, family)
    count = int(first.kv.get("split.count", 1) or 1)
    if count <= 1:
        return [first]
    no = int(first.kv.get("split.no", 0))
    if no != 0:
        m = SPLIT_RE.match(path.name)
        hint = f" -- pass {m.group('prefix')}-00001-of-{count:05d}.gguf" if m else ""
        raise ModelError(f"{path}: this is shard {no + 1} of {count}, not the first shard{hint}")
    headers = [first]
    for i, p in enumerate(shard_paths(path, count)[1:], start=1):
        if not p.exists():
            raise ModelError(f"{path}: split model is missing shard {i + 1} of {count}: {p}")
        h = read_header(p, family)
        if int(h.kv.get("split.no", -1)) != i:
            raise ModelError(f"{p}: expected split.no={i}, found {h.kv.get('split.no')}")
        h.tensors = [TensorInfo(t.name, t.shape, t.type, i, t.offset) for t in h.tensors]
        headers.append(h)
    expected = first.kv.get("split.tensors.count")
    total = sum(len(h.tensors) for h in headers)
    if expected is not None and int(expected) != total:
        raise ModelError(f"{path}: split model declares {expected} tensors but its {count} shards hold {total}")
    return headers


@dataclass(frozen=True)
class RawTensor:
    """A tensor info as stored: the ggml id in the file's own numbering, the offset in the data section."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int


@dataclass(frozen=True)
class Layout:
    """One GGUF file as bytes to copy: every key/value entry verbatim (key included), in file order, the
    tensor infos and where the data section starts. What writing a new file from old parts needs."""

    path: Path
    version: int
    kv: tuple[tuple[str, bytes], ...]
    tensors: tuple[RawTensor, ...]
    data_offset: int
    alignment: int


def read_layout(path: str | os.PathLike) -> Layout:
    """The raw key/value entries and tensor infos of one GGUF file (no data read, nothing decoded but keys)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    r = _Reader(path)
    try:
        if (r.read(4) if r.size >= 4 else b"") != MAGIC:
            raise ModelError(f"{path}: not a GGUF file")
        version = r.unpack(_U32)
        n_tensors, n_kv = r.unpack(_U64), r.unpack(_U64)
        spans, scratch = [], GGUFHeader(path=path, version=version)
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            start = r.tell()
            key = r.string()
            value = r.value(r.unpack(_U32), key, scratch)
            if key == "general.alignment":
                alignment = int(value)
            spans.append((key, start, r.tell()))
        tensors = []
        for _ in range(n_tensors):
            tensors.append(RawTensor(*_tensor_info(r, path)))
        data_offset = (r.tell() + alignment - 1) // alignment * alignment
    finally:
        r.close()
    with open(path, "rb") as f:
        kv = []
        for key, start, end in spans:
            f.seek(start)
            kv.append((key, f.read(end - start)))
    return Layout(path, version, tuple(kv), tuple(tensors), data_offset, alignment)

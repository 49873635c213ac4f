"""Write a GGUF file from parts of others: key/value entries copied verbatim or encoded anew, tensor infos,
and each tensor's data copied from a range of another file (`copy_file_range`: no pass through Python,
a reflink where the filesystem has them).

The layout is the one ggml's gguf writer gives (`gguf_write_to_file`, what llama-quantize and
llama-gguf-split write): header, key/values, tensor infos, zero padding to the alignment, then each
tensor's data at offset = previous offset + its size padded to the alignment, zero-padded. So a file
put together here from a llama-quantize output's own parts is byte for byte that output.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from qpatch.errors import UsageError
from qpatch.gguf.header import MAGIC

# GGUF value type ids
U16, I32, U32, STRING = 2, 5, 4, 8
_FMT = {U16: "<H", I32: "<i", U32: "<I"}


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv_entry(key: str, vtype: int, value) -> bytes:
    """One key/value entry (key, type, value) as GGUF stores it; scalars and strings."""
    if vtype == STRING:
        return _string(key) + struct.pack("<I", STRING) + _string(value)
    return _string(key) + struct.pack("<I", vtype) + struct.pack(_FMT[vtype], value)


def split_entries(no: int, count: int, tensors_total: int) -> list[tuple[str, bytes]]:
    """The keys llama.cpp's loader reads from the shards of a split model (llama-gguf-split writes these)."""
    return [("split.no", kv_entry("split.no", U16, no)), ("split.count", kv_entry("split.count", U16, count)),
            ("split.tensors.count", kv_entry("split.tensors.count", I32, tensors_total))]


@dataclass(frozen=True)
class OutTensor:
    """A tensor to write: its info, and where its `nbytes` of data are read from."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    nbytes: int
    source: Path
    source_offset: int  # absolute file offset of the data in `source`


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def header_bytes(kv: list[tuple[str, bytes]], tensors: list[OutTensor], alignment: int) -> bytes:
    out = [MAGIC, struct.pack("<IQQ", 3, len(tensors), len(kv))]
    out += [raw for _, raw in kv]
    offset = 0
    for t in tensors:
        out.append(_string(t.name) + struct.pack("<I", len(t.shape)) + struct.pack(f"<{len(t.shape)}Q", *t.shape)
                   + struct.pack("<IQ", t.type_id, offset))
        offset += _pad(t.nbytes, alignment)
    head = b"".join(out)
    return head + b"\0" * (_pad(len(head), alignment) - len(head))


def write(path: str | os.PathLike, kv: list[tuple[str, bytes]], tensors: list[OutTensor], alignment: int = 32,
          *, on_bytes=None) -> int:
    """Write the file (to `path`, which must not exist: callers write to a temporary name and rename).
    `on_bytes(n)` is called as data is copied. Returns the file's size."""
    path = Path(path)
    head = header_bytes(kv, tensors, alignment)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            pos = len(head)
            for t in tensors:
                out.flush()
                _copy(t.source, t.source_offset, out.fileno(), pos, t.nbytes)
                pos += t.nbytes
                pad = _pad(t.nbytes, alignment) - t.nbytes
                out.seek(pos)
                out.write(b"\0" * pad)
                pos += pad
                if on_bytes:
                    on_bytes(t.nbytes)
            out.truncate(pos)
    except OSError as e:
        path.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    return pos


def _copy(src: Path, src_off: int, dst_fd: int, dst_off: int, n: int) -> None:
    with open(src, "rb") as f:
        fd = f.fileno()
        done = 0
        while done < n:
            try:
                k = os.copy_file_range(fd, dst_fd, n - done, src_off + done, dst_off + done)
            except OSError:  # another filesystem or an old kernel: plain reads and writes
                k = 0
            if k == 0:
                break
            done += k
        while done < n:
            f.seek(src_off + done)
            chunk = f.read(min(n - done, 1 << 24))
            if not chunk:
                raise OSError(5, f"{src} ends before its tensor data does")
            os.pwrite(dst_fd, chunk, dst_off + done)
            done += len(chunk)

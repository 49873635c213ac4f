"""Importance-matrix entries (names and lengths) as llama-quantize loads them.

Both formats the pin reads: GGUF (`<name>.in_sum2` [ne0, n_mat] + `<name>.counts` [1, n_mat])
and the legacy binary format. Only names and lengths matter for type prediction: whether a
tensor has an entry, and whether its length equals ne[0] * ne[2].
"""

from __future__ import annotations

import struct
from pathlib import Path

from qpatch.errors import ModelError
from qpatch.gguf.header import MAGIC, read_header

FORMATS = ("gguf", "legacy")


def entry_length(shape: tuple[int, ...]) -> int:
    """The length an imatrix entry for a tensor of `shape` must have: a row's columns, times its experts."""
    return shape[0] * (shape[2] if len(shape) > 2 else 1)


def read_imatrix(path: str | Path, formats: tuple[str, ...] = FORMATS,
                 reader: str = "llama-quantize") -> dict[str, int]:
    """Map tensor name -> number of floats in its entry; `formats`: those the reading binary takes."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: imatrix file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    fmt = "gguf" if magic == MAGIC else "legacy"
    if fmt not in formats:
        names = {"gguf": "GGUF", "legacy": "the legacy binary format (.dat)"}
        raise ModelError(f"{path}: a {fmt.upper() if fmt == 'gguf' else fmt} imatrix; {reader} reads only "
                         f"{' or '.join(names[f] for f in formats)}")
    return _read_gguf(path) if fmt == "gguf" else _read_legacy(path)


def _read_gguf(path: Path) -> dict[str, int]:
    h = read_header(path)
    sums, counts = {}, set()
    for t in h.tensors:
        if t.name.endswith(".in_sum2"):
            n = 1
            for d in t.shape:
                n *= d
            sums[t.name[: -len(".in_sum2")]] = n
        elif t.name.endswith(".counts"):
            counts.add(t.name[: -len(".counts")])
    if not sums and not counts and "general.architecture" in h.kv:
        raise ModelError(f"{path}: a GGUF model, not an imatrix")
    for key in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
        if key not in h.kv and key not in h.skipped:
            raise ModelError(f"{path}: missing imatrix metadata '{key}' (llama-quantize refuses this file)")
    missing = sorted(set(sums) ^ counts)
    if missing:
        raise ModelError(f"{path}: mismatched sums and counts for {missing[0]}")
    return dict(sorted(sums.items()))


def _read_legacy(path: Path) -> dict[str, int]:
    data = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ModelError(f"{path}: truncated legacy imatrix file")
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return v

    n_entries = take("<i")
    if n_entries < 1 or n_entries > len(data) // 17:  # each entry takes at least 17 bytes
        raise ModelError(f"{path}: not an imatrix file: neither GGUF nor the legacy binary format")
    out = {}
    for _ in range(n_entries):
        n = take("<i")
        if n < 0 or pos + n > len(data):
            raise ModelError(f"{path}: not an imatrix file (GGUF or legacy)")
        name = data[pos: pos + n].decode("utf-8", errors="replace")
        pos += n
        take("<i")  # ncall
        nval = take("<i")
        if nval < 1 or pos + 4 * nval > len(data):
            raise ModelError(f"{path}: truncated legacy imatrix entry '{name}'")
        pos += 4 * nval
        out[name] = nval
    return dict(sorted(out.items()))

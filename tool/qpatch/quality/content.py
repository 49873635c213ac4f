"""Content hashes of models and texts: what eval's and sweep's caches are keyed by.

A model is hashed once per (path, size, mtime): the hash is remembered in `<cache>/hashes.json`,
so a sweep over a large model reads it once, not once per job.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from qpatch.cache import cache_root
from qpatch.gguf.header import read_model_headers

_CHUNK = 1 << 22


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    path = Path(path).resolve()
    st = path.stat()
    memo_path = cache_root() / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stamp = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if stamp not in memo:
        memo[stamp] = _file_sha256(path)
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True))
        os.replace(tmp, memo_path)
    return memo[stamp]


def content_hash(model: str | os.PathLike) -> str:
    """A model's hash over all its shards."""
    hashes = [file_hash(h.path) for h in read_model_headers(model)]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()


def text_hash(text: str | os.PathLike) -> str:
    return file_hash(text)

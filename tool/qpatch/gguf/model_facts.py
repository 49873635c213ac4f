"""What type choice needs to know about a model, read from its GGUF header(s).

Hyper-parameters are read the way llama.cpp's `load_hparams` reads them for the fields that
`llama_tensor_get_type` consults: block count, expert count, head counts (per-layer arrays
allowed), MTP layers. Which model type a pin derives from them (LLM_TYPE_70B) is the pin family's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from qpatch.errors import ModelError
from qpatch.gguf.header import TensorInfo, read_model_headers

_BLK = re.compile(r"^blk\.(-?\d+)\.")


def block_of(name: str) -> int:
    """Layer of a tensor as llama.cpp's sscanf("blk.%d.") sees it; -1 when there is none."""
    m = _BLK.match(name)
    return int(m.group(1)) if m else -1


def kind_of(name: str) -> str:
    """The tensor kind: the name without `blk.<i>.` and without the `.weight`/`.bias` suffix.

    blk.3.ffn_down_exps.weight -> ffn_down_exps; output.weight -> output.
    """
    m = _BLK.match(name)
    rest = name[m.end():] if m else name
    for suffix in (".weight", ".bias"):
        if rest.endswith(suffix):
            return rest[: -len(suffix)]
    return rest


def ggml_n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count, so ne (4096, 1) is 1-D."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def processing_order(names):
    """llama.cpp's weights_map order: by layer (non-blk first as layer -1), then by name (bytes)."""
    return sorted(names, key=lambda n: (block_of(n), n.encode()))


@dataclass(frozen=True)
class ModelFacts:
    path: str
    arch: str
    n_layer: int
    n_expert: int
    n_head: int  # layer 0
    n_head_kv: int  # layer 0
    n_head_kv_layers: tuple[int, ...]
    file_type: int | None
    tensors: tuple[TensorInfo, ...]  # in llama.cpp's processing order
    shards: tuple[str, ...]
    n_vocab: int | None = None
    n_layer_nextn: int = 0  # trailing MTP blocks (nextn_predict_layers), part of n_layer
    n_embd: int = 0
    n_tokens: int | None = None  # length of tokenizer.ggml.tokens
    file_order: tuple[str, ...] = ()  # tensor names as the files list them, shard by shard
    n_embd_head_k: int = 0  # {arch}.attention.key_length, else n_embd / n_head
    n_embd_head_v: int = 0  # {arch}.attention.value_length, else n_embd / n_head
    n_rot: int = 0  # {arch}.rope.dimension_count, else n_embd_head_k

    @property
    def n_gqa(self) -> int:
        return 0 if self.n_head_kv == 0 else self.n_head // self.n_head_kv

    @cached_property
    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    @property
    def has_output(self) -> bool:
        return "output.weight" in self.by_name

    @property
    def name(self) -> str:
        return Path(self.path).name


def _u32(kv: dict, key: str, path, default=None, required=True) -> int:
    v = kv.get(key, default)
    if v is None:
        if required:
            raise ModelError(f"{path}: missing hyper-parameter '{key}'")
        return 0
    if isinstance(v, list):
        v = v[0] if v else 0
    return int(v)


def _per_layer(kv: dict, key: str, n_layer: int, default: int) -> tuple[int, ...]:
    v = kv.get(key)
    if v is None:
        return (default,) * n_layer
    if isinstance(v, list):
        if len(v) != n_layer:
            return tuple(int(x) for x in v) + (0,) * max(0, n_layer - len(v))
        return tuple(int(x) for x in v)
    return (int(v),) * n_layer


def read_model(path: str | os.PathLike, family: str | None = None) -> ModelFacts:
    """The facts of a model (first shard given); tensor type ids read in `family`'s numbering if given."""
    headers = read_model_headers(path, family)
    kv = headers[0].kv
    arch = kv.get("general.architecture")
    if kv.get("general.type") == "imatrix" or arch == "imatrix" or "imatrix.datasets" in kv:
        raise ModelError(f"{path}: an imatrix file, not a model",
                         hint="give it as --imatrix; MODEL is the GGUF to quantize")
    if not isinstance(arch, str):
        raise ModelError(f"{path}: missing 'general.architecture'")
    n_layer = _u32(kv, f"{arch}.block_count", path)
    n_expert = _u32(kv, f"{arch}.expert_count", path, default=0, required=False)
    heads = _per_layer(kv, f"{arch}.attention.head_count", n_layer, 0)
    heads_kv = _per_layer(kv, f"{arch}.attention.head_count_kv", n_layer, heads[0] if heads else 0)
    tensors = []
    seen = set()
    file_order = tuple(t.name for h in headers for t in h.tensors)
    for h in headers:
        for t in h.tensors:
            if t.name in seen:
                raise ModelError(f"{h.path}: duplicate tensor '{t.name}'")
            seen.add(t.name)
            tensors.append(t)
    order = {n: i for i, n in enumerate(processing_order(t.name for t in tensors))}
    tensors.sort(key=lambda t: order[t.name])
    for t in tensors:
        b = block_of(t.name)
        if b >= n_layer:
            raise ModelError(f"{path}: tensor '{t.name}' is in block {b}, but block_count is {n_layer}")
    ft = kv.get("general.file_type")
    vocab = kv.get(f"{arch}.vocab_size")
    return ModelFacts(
        path=str(path),
        arch=arch,
        n_layer=n_layer,
        n_expert=n_expert,
        n_head=heads[0] if heads else 0,
        n_head_kv=heads_kv[0] if heads_kv else 0,
        n_head_kv_layers=heads_kv,
        file_type=int(ft) if ft is not None else None,
        tensors=tuple(tensors),
        shards=tuple(str(h.path) for h in headers),
        n_vocab=int(vocab) if vocab is not None else None,
        n_layer_nextn=_u32(kv, f"{arch}.nextn_predict_layers", path, default=0, required=False),
        n_embd=_u32(kv, f"{arch}.embedding_length", path, default=0, required=False),
        n_tokens=_tokens(headers[0]),
        file_order=file_order,
        **_head_sizes(kv, arch, heads[0] if heads else 0, path),
    )


def _head_sizes(kv: dict, arch: str, n_head: int, path) -> dict:
    n_embd = _u32(kv, f"{arch}.embedding_length", path, default=0, required=False)
    per_head = n_embd // n_head if n_head else 0
    k = _u32(kv, f"{arch}.attention.key_length", path, default=per_head, required=False)
    v = _u32(kv, f"{arch}.attention.value_length", path, default=per_head, required=False)
    return {"n_embd_head_k": k, "n_embd_head_v": v,
            "n_rot": _u32(kv, f"{arch}.rope.dimension_count", path, default=k, required=False)}


def _tokens(h) -> int | None:
    toks = h.kv.get("tokenizer.ggml.tokens")
    if isinstance(toks, list):
        return len(toks)
    skipped = h.skipped.get("tokenizer.ggml.tokens")
    return int(skipped[1]) if skipped else None

"""Real model layouts as ModelFacts: the seven of ../shared/reference/real-layouts/ and dense models rebuilt
from a snapshot's header line (upstream's tests/snapshots/*.schema)."""

from __future__ import annotations

import json
import re

from helpers.paths import ROOT
from qpatch.gguf.catalogue import T
from qpatch.gguf.header import TensorInfo
from qpatch.gguf.model_facts import ModelFacts, processing_order

LAYOUTS = ROOT.parent / "shared" / "reference" / "real-layouts"


def header_params(schema_text: str) -> dict:
    """`# n_embd=..., n_layer=..., ...` of a snapshot file."""
    line = schema_text.splitlines()[1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def facts(name: str, arch: str, tensors, *, n_layer: int, n_head: int, n_head_kv: int, n_expert: int = 0,
          n_layer_nextn: int = 0) -> ModelFacts:
    by = {n: (tuple(s), T[dt.upper()] if isinstance(dt, str) else dt) for n, s, dt in tensors}
    order = processing_order(by)
    return ModelFacts(path=name, arch=arch, n_layer=n_layer, n_expert=n_expert, n_head=n_head, n_head_kv=n_head_kv,
                      n_head_kv_layers=(n_head_kv,) * n_layer, file_type=None,
                      tensors=tuple(TensorInfo(n, by[n][0], by[n][1]) for n in order), shards=(name,),
                      n_layer_nextn=n_layer_nextn)


def real_layout(file: str) -> dict:
    return json.loads((LAYOUTS / file).read_text())


def dense_tensors(*, n_embd: int, n_ff: int, n_vocab: int, n_layer: int, n_head: int, n_head_kv: int,
                  head_dim: int, tied: bool):
    """The weights of a dense llama/qwen3 block stack as the converter writes them (norms included)."""
    out = [("token_embd.weight", (n_embd, n_vocab), "f32"), ("output_norm.weight", (n_embd,), "f32")]
    if not tied:
        out.append(("output.weight", (n_embd, n_vocab), "f32"))
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (n_embd,), "f32"), (b + "ffn_norm.weight", (n_embd,), "f32"),
                (b + "attn_q.weight", (n_embd, n_head * head_dim), "f32"),
                (b + "attn_k.weight", (n_embd, n_head_kv * head_dim), "f32"),
                (b + "attn_v.weight", (n_embd, n_head_kv * head_dim), "f32"),
                (b + "attn_output.weight", (n_head * head_dim, n_embd), "f32"),
                (b + "ffn_gate.weight", (n_embd, n_ff), "f32"), (b + "ffn_up.weight", (n_embd, n_ff), "f32"),
                (b + "ffn_down.weight", (n_ff, n_embd), "f32")]
    return out

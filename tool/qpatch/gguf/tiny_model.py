"""A small DeepSeek-V3-shaped model (`deepseek2` in llama.cpp) written as a real BF16 GGUF.

Shape: MLA attention (q_lora, kv_lora, rope/nope split, attn_k_b/attn_v_b as the current
converter writes them), one leading dense block, routed experts with a shared expert,
sigmoid gating with a selection bias (exp_probs_b), normalised and scaled expert weights:
every shipped policy, `deepseek-v3` included, applies to it as it is. The vocabulary is a real
one, copied from one of the pin's `models/ggml-vocab-*.gguf` files, so the pin's own
`llama-perplexity` and `llama-imatrix` tokenize text for it.

`write()` takes trained weights (numpy, as `train/tiny_moe.py` exports them) or, with none,
random ones: CI's tiny model for `qpatch eval`/`sweep` on two cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from qpatch.errors import ModelError
from qpatch.gguf.synth import Spec, _writer_kv, write_tensors

VOCAB = "models/ggml-vocab-deepseek-coder.gguf"  # in every pin's tree: a DeepSeek BPE vocabulary, 32k tokens
ROPE_BASE = 10000.0
RMS_EPS = 1e-6
WEIGHTS_SCALE = 2.5  # DeepSeek-V3's routed_scaling_factor


def spec(n_vocab: int, **changes) -> Spec:
    """The model's shape. Every row length (ne[0]) that k-quants need is a multiple of 256, except
    attn_k_b's (qk_nope), which falls back as it does in the real DeepSeek-V3."""
    base: dict[str, Any] = dict(
        name="tiny-deepseek", arch="deepseek2", n_layer=5, leading_dense=1, n_expert=16, n_expert_used=4,
        shared_experts=1, attention="mla", n_embd=256, n_ff=768, n_ff_exp=256, n_head=4, n_head_kv=1,
        q_lora=256, kv_lora=256, head_k_mla=96, head_v_mla=64, qk_rope=32, n_vocab=n_vocab, full=True,
    )
    base.update(changes)
    return Spec(**base)


def model_kv(s: Spec, n_ctx_train: int) -> dict:
    kv = s.kv()
    a = s.arch
    kv.update({
        f"{a}.context_length": ("u32", n_ctx_train),
        f"{a}.rope.freq_base": ("f32", ROPE_BASE),
        f"{a}.attention.layer_norm_rms_epsilon": ("f32", RMS_EPS),
        f"{a}.expert_weights_scale": ("f32", WEIGHTS_SCALE),
        "general.name": ("str", s.name),
    })
    return kv


VocabField = tuple[str, object, GGUFValueType, "GGUFValueType | None"]


def vocabulary(vocab_gguf: str | os.PathLike) -> tuple[int, list[VocabField]]:
    """(n_vocab, every tokenizer.* field of a vocab GGUF as (key, value, type, array element type))."""
    try:
        r = GGUFReader(str(vocab_gguf))
    except (OSError, ValueError) as e:
        raise ModelError(f"{vocab_gguf}: cannot read the vocabulary: {e}") from e
    fields: list[VocabField] = []
    n_vocab = 0
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value: object
        vtype = f.types[0]
        sub = f.types[1] if vtype == GGUFValueType.ARRAY else None
        if vtype == GGUFValueType.ARRAY:
            if sub == GGUFValueType.STRING:
                value = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                value = [f.parts[i][0].item() for i in f.data]
        elif vtype == GGUFValueType.STRING:
            value = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            value = f.parts[f.data[0]][0].item()
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)  # type: ignore[arg-type]  # an array: a list
        fields.append((key, value, vtype, sub))
    if not n_vocab:
        raise ModelError(f"{vocab_gguf}: no tokenizer.ggml.tokens: not a vocabulary GGUF")
    return n_vocab, fields


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (as torch and the converter round)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def random_weights(s: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights in numpy order (reversed ne): norms 1, matrices N(0, 0.02), bias 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, ne, _ in s.tensors():
        shape = tuple(reversed(ne))
        if name.endswith("_norm.weight"):
            out[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = rng.standard_normal(shape, dtype=np.float32) * 0.02
    return out


def _checked(weights: dict, name: str, ne, ttype) -> np.ndarray:
    shape = tuple(reversed(ne))
    if name not in weights:
        raise ModelError(f"no weights for {name}")
    arr = np.asarray(weights[name], dtype=np.float32)
    if arr.shape != shape:
        raise ModelError(f"{name}: weights of shape {arr.shape}, the model needs {shape}")
    return _bf16(arr) if ttype == T.BF16 else arr


def write(path: str | os.PathLike, vocab_gguf: str | os.PathLike, *, weights: dict[str, np.ndarray] | None = None,
          n_ctx_train: int = 4096, seed: int = 0, **changes) -> Path:
    """Write the model as BF16 GGUF (norms, router and bias F32, as the converter keeps them)."""
    n_vocab, vocab = vocabulary(vocab_gguf)
    s = spec(n_vocab, **changes)
    weights = weights if weights is not None else random_weights(s, seed)
    path = Path(path)
    w = GGUFWriter(str(path), s.arch)
    w.add_uint32("general.file_type", 32)  # LLAMA_FTYPE_MOSTLY_BF16
    _writer_kv(w, model_kv(s, n_ctx_train))
    for key, value, vtype, sub in vocab:
        w.add_key_value(key, value, vtype, sub_type=sub)
    write_tensors(w, ((name, _checked(weights, name, ne, ttype), ttype) for name, ne, ttype in s.tensors()))
    return path


def tiny(**changes):
    """The CI-sized variant: two MoE blocks, small experts (seconds to quantize and evaluate on two cores)."""
    return {**dict(n_layer=3, n_expert=16, n_expert_used=2, n_embd=256, n_ff=512, n_ff_exp=256), **changes}


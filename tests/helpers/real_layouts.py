"""The seven real model layouts of ../shared/reference/real-layouts/ as real-size sparse GGUF files.

Tensor names, shapes and source types are the files'; the hyper-parameters are not in them, so
they are written here as the converter writes them, from the shapes (block, expert and head
counts, head sizes) and the models' published configurations. The header is real and the data
region a hole: `qpatch plan` and `llama-quantize --dry-run` (0c1e57098) read them as they are.
"""

from __future__ import annotations

from pathlib import Path

from helpers import layouts
from qpatch.gguf.catalogue import T
from qpatch.gguf.synth import write_imatrix, write_sparse


def _u(v):
    return ("u32", v)


def _f(v):
    return ("f32", v)


def _common(a: str, *, n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, eps=1e-6, rope_dim=None, **extra):
    kv = {f"{a}.context_length": _u(4096), f"{a}.embedding_length": _u(n_embd), f"{a}.block_count": _u(n_layer),
          f"{a}.feed_forward_length": _u(n_ff), f"{a}.attention.head_count": _u(n_head),
          f"{a}.attention.head_count_kv": _u(n_head_kv), f"{a}.attention.layer_norm_rms_epsilon": _f(eps),
          f"{a}.vocab_size": _u(n_vocab)}
    if rope_dim:
        kv[f"{a}.rope.dimension_count"] = _u(rope_dim)
    kv.update({f"{a}.{k}": v for k, v in extra.items()})
    return kv


def _moe(n_expert, used, ff_exp, **more):
    return {"expert_count": _u(n_expert), "expert_used_count": _u(used), "expert_feed_forward_length": _u(ff_exp),
            **more}


_SSM = dict(**{"ssm.conv_kernel": _u(4), "ssm.state_size": _u(128), "ssm.group_count": _u(16),
               "full_attention_interval": _u(4), "rope.dimension_sections": ("arr_i32", [11, 11, 10, 0])})

# layout file -> (architecture, hyper-parameters as written by the converter)
LAYOUTS = {
    "DeepSeek-V3.1-Terminus.json": ("deepseek2", _common(
        "deepseek2", n_layer=61, n_embd=7168, n_ff=18432, n_head=128, n_head_kv=1, n_vocab=129280, rope_dim=64,
        **_moe(256, 8, 2048), **{
            "leading_dense_block_count": _u(3), "attention.q_lora_rank": _u(1536),
            "attention.kv_lora_rank": _u(512), "attention.key_length": _u(576), "attention.value_length": _u(512),
            "attention.key_length_mla": _u(192), "attention.value_length_mla": _u(128),
            "expert_shared_count": _u(1), "expert_weights_scale": _f(2.5), "expert_weights_norm": ("bool", True),
            "expert_gating_func": _u(2)})),
    "GLM-4.5-Air.json": ("glm4moe", _common(
        "glm4moe", n_layer=47, n_embd=4096, n_ff=10944, n_head=96, n_head_kv=8, n_vocab=151552, eps=1e-5,
        rope_dim=64, **_moe(128, 8, 1408), **{
            "leading_dense_block_count": _u(1), "expert_shared_count": _u(1), "expert_weights_scale": _f(1.0),
            "expert_weights_norm": ("bool", True), "expert_gating_func": _u(2), "nextn_predict_layers": _u(1),
            "attention.key_length": _u(128), "attention.value_length": _u(128)})),
    "Qwen3-4B-Instruct-2507.json": ("qwen3", _common(
        "qwen3", n_layer=36, n_embd=2560, n_ff=9728, n_head=32, n_head_kv=8, n_vocab=151936, rope_dim=128,
        **{"attention.key_length": _u(128), "attention.value_length": _u(128)})),
    "Qwen3.5-35B-A3B.json": ("qwen35moe", _common(
        "qwen35moe", n_layer=40, n_embd=2048, n_ff=0, n_head=16, n_head_kv=2, n_vocab=248320, rope_dim=64,
        **_moe(256, 8, 512), **_SSM, **{
            "expert_shared_feed_forward_length": _u(512), "ssm.inner_size": _u(4096), "ssm.time_step_rank": _u(32),
            "attention.key_length": _u(256), "attention.value_length": _u(256)})),
    "Qwen3.5-397B-A17B.json": ("qwen35moe", _common(
        "qwen35moe", n_layer=60, n_embd=4096, n_ff=0, n_head=32, n_head_kv=2, n_vocab=248320, rope_dim=64,
        **_moe(512, 10, 1024), **_SSM, **{
            "expert_shared_feed_forward_length": _u(1024), "ssm.inner_size": _u(8192), "ssm.time_step_rank": _u(64),
            "attention.key_length": _u(256), "attention.value_length": _u(256)})),
    "Qwen3.6-27B.json": ("qwen35", _common(
        "qwen35", n_layer=64, n_embd=5120, n_ff=17408, n_head=24, n_head_kv=4, n_vocab=248320, rope_dim=64,
        **_SSM, **{"ssm.inner_size": _u(6144), "ssm.time_step_rank": _u(48),
                   "attention.key_length": _u(256), "attention.value_length": _u(256)})),
    "gemma-4-31B-it.json": ("gemma4", _common(
        "gemma4", n_layer=60, n_embd=5376, n_ff=21504, n_head=32, n_head_kv=16, n_vocab=262144, rope_dim=512,
        **{"attention.key_length": _u(512), "attention.value_length": _u(512),
           "attention.key_length_swa": _u(256), "attention.value_length_swa": _u(256),
           "attention.sliding_window": _u(1024), "final_logit_softcapping": _f(30.0),
           "rope.dimension_count_swa": _u(256), "embedding_length_per_layer_input": _u(0),
           # every 6th block is global (head size 512, 4 kv heads, no attn_v): read off the layout's shapes
           "attention.sliding_window_pattern": ("arr", [(i + 1) % 6 != 0 for i in range(60)]),
           "attention.head_count_kv": ("arr_i32", [4 if (i + 1) % 6 == 0 else 16 for i in range(60)])})),
}


def write(file: str, path: Path) -> Path:
    arch, kv = LAYOUTS[file]
    data = layouts.real_layout(file)
    tensors = [(n, tuple(s), T[dt.upper()]) for n, s, dt in data["tensors"]]
    return write_sparse(path, arch, {"general.file_type": ("u32", 32), **kv}, tensors)


class _Tensors:
    def __init__(self, tensors):
        self._t = tensors

    def tensors(self):
        return self._t


def write_thin(file: str, path: Path, *, rows: int = 16, experts: int = 2, imatrix: Path | None = None) -> Path:
    """The layout with every tensor cut to `rows` rows and `experts` stored experts (real names, real ne[0],
    real hyper-parameters), data a hole: for ik_llama.cpp, whose dry run reads every tensor's data. With
    `imatrix`, a legacy imatrix for it too."""
    arch, kv = LAYOUTS[file]
    data = layouts.real_layout(file)
    tensors = []
    for n, shape, dt in data["tensors"]:
        shape = list(shape)
        if len(shape) > 1:
            shape[1] = min(shape[1], rows)
        if len(shape) > 2:
            shape[2] = min(shape[2], experts)
        tensors.append((n, tuple(shape), T[dt.upper()]))
    if imatrix is not None:
        write_imatrix(_Tensors(tensors), imatrix, legacy=True)
    return write_sparse(path, arch, {"general.file_type": ("u32", 32), **kv}, tensors)


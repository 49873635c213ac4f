"""Synthetic model zoo: thin GGUF models whose type choices exercise every branch of stock.

Thin (2 rows, 2 stored experts, real row lengths), so llama-quantize runs on each in
milliseconds apart from its grid set-up for IQ1/IQ2 types. Block counts vary so that the
`n/8`, `n/16`, `7n/8` and use_more_bits edges fall differently:
n: n/16 n/8 7n/8 -> 7: 0 0 6 | 10: 0 1 8 | 12: 0 1 10 | 13: 0 1 11 | 16: 1 2 14 | 24: 1 3 21 | 61: 3 7 53
| 80: 5 10 70.
"""

from __future__ import annotations

from pathlib import Path

from qpatch.gguf.synth import Spec, deepseek_v3, write_imatrix, write_model

ZOO: tuple[Spec, ...] = (
    # dense GQA (n_gqa 4): attn_v gqa>=4 rules, the i_attention_wv / i_ffn_down counters of dense models
    Spec("llama-gqa4-16L", "llama", 16, n_head=8, n_head_kv=2),
    # Mixtral-like: exactly 8 experts, n_gqa 2: every `n_expert == 8` bump, layer from the name
    Spec("llama-moe8-gqa2-13L", "llama", 13, n_head=8, n_head_kv=4, n_expert=8),
    # Qwen3-MoE: 128 experts (misses the == 8 bumps), attn_output wider than n_embd
    Spec("qwen3moe-128e-24L", "qwen3moe", 24, n_head=8, n_head_kv=2, head_dim=64, n_expert=128, n_expert_used=8),
    # DeepSeek MLA: attn_k_b/attn_v_b (3-D, ne[2] = heads), leading dense blocks, shared experts
    Spec("deepseek2-mla-10L", "deepseek2", 10, n_head=8, n_head_kv=1, n_expert=64, n_expert_used=6,
         leading_dense=3, shared_experts=1, attention="mla", n_ff=1024),
    # DeepSeek-V2 style attn_kv_b (counts as an attention_wv), 2 shared experts
    Spec("deepseek2-kvb-12L", "deepseek2", 12, n_head=8, n_head_kv=8, n_expert=160, n_expert_used=6,
         leading_dense=1, shared_experts=2, attention="kvb", n_ff=1024),
    # DeepSeek-V3's real row lengths at 61 blocks: attn_k_b rows of 128 fall back from K-quants
    deepseek_v3(name="deepseek-v3-thin-61L"),
    # llama at 80 blocks with GQA is LLM_TYPE_70B: attn_v Q3_K/Q4_K become Q5_K; n/8 = 10, n/16 = 5
    Spec("llama-70b-gqa8-80L", "llama", 80, n_head=8, n_head_kv=1),
    # tied embeddings: token_embd takes output.weight's rules; n_gqa 1; n/8 == 0
    Spec("llama-tied-7L", "llama", 7, n_head=8, n_head_kv=8, tied=True),
    # rows of 288 and 608: multiples of 32, not 256 -> every K/IQ choice falls back, output -> Q8_0
    Spec("llama-rows288-12L", "llama", 12, n_embd=288, n_head=9, n_head_kv=3, n_ff=608),
    # ffn_down rows of 200, not a multiple of 32 -> F16 fallback, or "Unsupported tensor size" (Q4_0, Q8_0, ...)
    Spec("llama-rows200-10L", "llama", 10, n_ff=200),
    # falcon: fused attn_qkv, falcon's own ffn_down/attn_output/output rules, no ffn_gate
    Spec("falcon-10L", "falcon", 10, n_head=8, n_head_kv=1, attention="qkv", n_ff=1024),
    # ne[1] == 1: ggml_n_dims says 1-D, so only the 3-D expert tensors are quantized; n_expert 4
    Spec("llama-moe4-rows1-7L", "llama", 7, n_head=8, n_head_kv=4, n_expert=4, rows=1),
)

# The export proofs' models (test_export.py): their expected override lists are worked out by hand for
# these block counts (24-block DeepSeek: stock's ffn_down counter runs ahead of the blocks).
# Two rows: with one, ggml_n_dims sees a 1-D tensor and llama-quantize keeps every 2-D matrix as is.
EXPORT_ZOO: tuple[Spec, ...] = (
    Spec("llama-gqa", "llama", n_layer=16, n_head=8, n_head_kv=2, rows=2),
    Spec("llama-moe8", "llama", n_layer=8, n_expert=8, n_expert_used=2, rows=2),
    Spec("qwen3moe-128", "qwen3moe", n_layer=12, n_head=16, n_head_kv=4, n_expert=128, n_expert_used=8, rows=2),
    # attn_k_b rows are head_k_mla - 64 = 128 long: every block-256 choice falls back. As in DeepSeek-V3
    # (61 blocks, 3 dense), fewer dense blocks than n/8, so stock's ffn_down counter runs ahead of the blocks
    Spec("dsv3-mla", "deepseek2", n_layer=24, n_expert=256, n_expert_used=8, leading_dense=1, shared_experts=1,
         attention="mla", rows=2),
    Spec("dsv2-kvb", "deepseek2", n_layer=12, n_expert=64, n_expert_used=6, leading_dense=1, shared_experts=2,
         attention="kvb", rows=2),
    Spec("llama-tied", "llama", n_layer=8, n_head=8, n_head_kv=8, tied=True, rows=2),
)

BY_NAME = {s.name: s for s in ZOO + EXPORT_ZOO}


def write_zoo(directory: Path, specs=ZOO) -> dict[str, tuple[Path, Path]]:
    """Write every model and its full synthetic imatrix: name -> (model, imatrix)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for s in specs:
        model, im = directory / f"{s.name}.gguf", directory / f"{s.name}.imatrix.gguf"
        write_model(s, model)
        write_imatrix(s, im)
        out[s.name] = (model, im)
    return out


def imatrix_for(model: str, how, zoo_files, tmp_path: Path) -> Path | None:
    """The imatrix a test case names: "full" (the zoo's), "none", or ("skip"|"wrong", tensor): the full one
    with that tensor's entry left out or of the wrong length."""
    if how == "full":
        return zoo_files[model][1]
    if how == "none":
        return None
    kind, tensor = how
    return write_imatrix(BY_NAME[model], tmp_path / "im.gguf",
                         **({"skip": (tensor,)} if kind == "skip" else {"wrong_length": (tensor,)}))

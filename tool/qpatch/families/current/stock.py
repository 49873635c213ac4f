"""Stock type choice of the current family (0c1e57098 `src/llama-quant.cpp`).

`llama_tensor_get_type` (the wrapper: overrides, --pure, the fallback) calls `llama_tensor_get_type_impl` (the
mix) over a `tensor_category` per name. The mix's branches are b6700's, word for word where upstream did not
touch them, so `StockModel` here is mainline's (families/mainline.py, as the b6700 family has it) with what
0c1e57098 changed overridden: the classifier (categories, their order, the GLM5_NEXT and BAILINGMOE3 rules),
the low-bit branch, layer checks, LLM_TYPE_70B, the token embedding table. Each decision carries a label that
`qpatch plan` shows. Differences that matter: `attn_qkv` and `attn_kv_b` are attn_v-like (their own attn_qkv
table is unreachable), the dense-layer count for `ffn_*` is the block count while `i_ffn_down` still counts
tensors, GLM5_NEXT and BAILINGMOE3 rules, Q1_0/Q2_0, and a fallback that keeps a 32-block type (then F16) and
throws for the rest.

Proven against this family's `llama-quantize --dry-run` (tests/test_current_differential.py) and
upstream's own snapshot suite (tests/test_snapshots.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from qpatch.families import mainline
from qpatch.gguf.catalogue import T, block_size
from qpatch.gguf.model_facts import ModelFacts

_TOKEN_EMBD = {**mainline.TOKEN_EMBD, "Q2_0": T.Q4_K}

# tensor_type_fallback's switch; types not listed: a 32-block type stays (then F16), others throw.
FALLBACK: dict[T, T] = {
    T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL,
    T.Q2_0: T.Q4_0, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
}

# Architectures whose load_hparams sets LLM_TYPE_70B, and at which layer count (src/models/*.cpp).
_ARCH_70B = {"qwen2": 80, "deci": 80, "olmo": 80, "jais2": 68}

# categories, in tensor_get_category's order of tests
TOKEN_EMBD, ATTENTION_Q, ATTENTION_V, ATTENTION_K, ATTENTION_QKV, ATTENTION_KV_B, ATTENTION_OUTPUT = (
    "token_embd", "attn_q", "attn_v", "attn_k", "attn_qkv", "attn_kv_b", "attn_output")
FFN_UP, FFN_GATE, FFN_DOWN, OUTPUT, OTHER = "ffn_up", "ffn_gate", "ffn_down", "output", "other"
_ATTN_V_LIKE = (ATTENTION_V, ATTENTION_QKV, ATTENTION_KV_B)


def category(name: str) -> str:
    """tensor_get_category."""
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for sub, cat in (("attn_qkv.weight", ATTENTION_QKV), ("attn_kv_b.weight", ATTENTION_KV_B),
                     ("attn_v.weight", ATTENTION_V), ("attn_k.weight", ATTENTION_K), ("attn_q.weight", ATTENTION_Q),
                     ("attn_output.weight", ATTENTION_OUTPUT), ("ffn_up", FFN_UP), ("ffn_gate", FFN_GATE),
                     ("ffn_down", FFN_DOWN)):
        if sub in name:
            return cat
    return OTHER


def stock_site(name: str) -> str:
    """The rule site of llama_tensor_get_type_impl that decides `name` (attn_qkv and attn_kv_b are attn_v's)."""
    cat = category(name)
    return "attn_v" if cat in _ATTN_V_LIKE else cat


def is_70b(m: ModelFacts) -> bool:
    """model.type == LLM_TYPE_70B; load_hparams switches on n_layer() = block count - nextn layers."""
    n = m.n_layer - m.n_layer_nextn
    if m.arch == "llama":
        return m.n_expert != 8 and n == 80 and m.n_head != m.n_head_kv
    return _ARCH_70B.get(m.arch) == n


def requires_imatrix(name: str, t: T, ftype: str) -> bool:
    """tensor_requires_imatrix."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if t in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        return True
    return t == T.Q2_K and ftype == "Q2_K_S"


# ggml-quants.c asserts quant_weights for these (quantize_row_iq2_xxs/iq2_xs/iq1_s_impl): a tensor that
# tensor_requires_imatrix lets through without data (token_embd, output) aborts the run instead
ABORTS_WITHOUT_WEIGHTS = (T.IQ2_XXS, T.IQ2_XS, T.IQ1_S)


class NoFallback(ValueError):
    """tensor_type_fallback throws: the type does not fit the row and has no fallback."""


def shape_fallback(t: T, ne0: int, policy_table: dict[T, T] | None = None) -> tuple[T, bool, str]:
    """tensor_type_fallback: (type, fell_back, label); the policy's entries are consulted first."""
    qk = block_size(t)
    if ne0 % qk == 0:
        return t, False, ""
    if policy_table is not None and t in policy_table:
        new = policy_table[t]
    elif t in FALLBACK:
        new = FALLBACK[t]
    elif qk <= 32:
        new = t
    else:
        raise NoFallback(f"no tensor type fallback is defined for type {t.name} (ne0={ne0})")
    if ne0 % block_size(new) != 0:
        new = T.F16
    return new, True, f"fallback {t.name}->{new.name}"


@dataclass
class StockState(mainline.StockState):
    """quantize_state_impl's counters (init_quantize_state_counters): mainline's, with attn_qkv and attn_kv_b
    counted as attn_v-like by category; `n_layer` is n_ffn_down = n_ffn_gate = n_ffn_up, the block count."""

    @classmethod
    def for_tensors(cls, model: ModelFacts, names: list[str], has_imatrix: bool) -> "StockState":
        cats = [category(n) for n in names]
        return cls(n_attention_wv=sum(1 for c in cats if c in _ATTN_V_LIKE), n_layer=model.n_layer,
                   has_output=OUTPUT in cats, has_imatrix=has_imatrix)


class StockModel(mainline.StockModel):
    """llama_tensor_get_type_impl for one model and ftype; call `choose` in processing order."""

    def __init__(self, model: ModelFacts, ftype: str, state: StockState, output_tensor_type: T | None):
        # --token-embedding-type returns in the wrapper, before the mix: never seen here
        super().__init__(model, ftype, state, output_tensor_type, None)

    def _is_70b(self) -> bool:
        return is_70b(self.model)

    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        i, n = super()._layer(counter, name)
        if i >= n:
            raise ValueError(f"Bad layer {i} for tensor {name}. Must be in [0, {n})")
        return i, n

    def choose(self, name: str, ne: tuple[int, ...], new: T) -> tuple[T, str]:
        f, m, s, cat = self.ftype, self.model, self.state, category(name)
        if m.arch == "glm5-next" and any(k in name for k in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new not in (T.F32, T.BF16, T.F16):
                return T.Q8_0, "stock:glm5-next/keep q8_0"
        if cat == OUTPUT or (not s.has_output and cat == TOKEN_EMBD):
            return self._output(ne, new)
        if f == "MXFP4_MOE":
            stacked = len(ne) > 2 and ne[2] > 1
            expert = m.arch != "bailingmoe3" or cat in (FFN_UP, FFN_GATE, FFN_DOWN)
            return (T.MXFP4, "stock:mxfp4_moe/experts") if stacked and expert else (T.Q8_0, "stock:mxfp4_moe/other")
        if cat == TOKEN_EMBD:
            t = _TOKEN_EMBD.get(f)
            return (t, f"stock:token_embd/{f}") if t else (new, "default")
        if f in mainline.LOW_BIT:
            return self._low_bit_at("attn_v" if cat in _ATTN_V_LIKE else cat, new)  # attn_qkv/kv_b: attn_v's rule
        if cat in _ATTN_V_LIKE:
            return self._attn_v(new)
        if cat == ATTENTION_K:
            return self._attn_k(new)
        if cat == ATTENTION_Q:
            return {"IQ3_XS": (T.IQ3_XXS, "stock:attn_q/IQ3_XS"),
                    "IQ3_XXS": (T.IQ2_S, "stock:attn_q/IQ3_XXS")}.get(f, (new, "default"))
        if cat == FFN_DOWN:
            return self._ffn_down(name, new)
        if cat == ATTENTION_OUTPUT:
            return self._attn_output(new)
        if cat == FFN_GATE:
            return self._gate_up(name, new, "i_ffn_gate", "ffn_gate")
        if cat == FFN_UP:
            return self._gate_up(name, new, "i_ffn_up", "ffn_up")
        return new, "default"

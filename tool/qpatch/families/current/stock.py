"""Stock type choice of the current family (0c1e57098 `src/llama-quant.cpp`).

`llama_tensor_get_type` (the wrapper: overrides, --pure, the fallback) calls
`llama_tensor_get_type_impl` (the mix) over a `tensor_category` per name. Re-expressed here
branch by branch with llama.cpp's tests and order; each decision carries a label that
`qpatch plan` shows. The counters live in `StockState` and advance where stock advances them.
Differences from the b6700 family that matter: `attn_qkv` and `attn_kv_b` are attn_v-like
(their own attn_qkv table is unreachable), the dense-layer count for `ffn_*` is the block
count while `i_ffn_down` still counts tensors, GLM5_NEXT and BAILINGMOE3 rules, Q1_0/Q2_0,
and a fallback that keeps a 32-block type (then F16) and throws for the rest.

Proven against this family's `llama-quantize --dry-run` (tests/test_current_differential.py) and
upstream's own snapshot suite (tests/test_snapshots.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...catalogue import T, block_size
from ...evaluate import use_more_bits
from ...model_facts import ModelFacts, block_of

LOW_BIT = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
_OUTPUT_Q5K = frozenset({"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
_TOKEN_EMBD = {
    "IQ2_XXS": T.Q2_K, "IQ2_XS": T.Q2_K, "IQ1_S": T.Q2_K, "IQ1_M": T.Q2_K,
    "IQ2_S": T.IQ3_S, "IQ2_M": T.IQ3_S, "IQ3_XXS": T.IQ3_S,
    "TQ1_0": T.Q4_K, "TQ2_0": T.Q4_K, "Q2_0": T.Q4_K,
}
_ATTN_OUT_E8 = frozenset({
    "Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS",
})
_ATTN_OUT = {"Q2_K": T.Q3_K, "IQ3_XXS": T.IQ3_S, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K, "IQ3_M": T.Q4_K}

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


class NoFallback(ValueError):
    """tensor_type_fallback throws: the type does not fit the row and has no fallback."""


def fallback(t: T, ne0: int, policy_table: dict[T, T] | None = None) -> tuple[T, bool, str]:
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
class StockState:
    """quantize_state_impl's counters (init_quantize_state_counters)."""

    n_attention_wv: int
    n_ffn: int  # n_ffn_down = n_ffn_gate = n_ffn_up = n_layer_all
    has_tied_embeddings: bool
    has_imatrix: bool
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0

    @classmethod
    def for_tensors(cls, model: ModelFacts, names: list[str], has_imatrix: bool) -> "StockState":
        cats = [category(n) for n in names]
        return cls(n_attention_wv=sum(1 for c in cats if c in _ATTN_V_LIKE), n_ffn=model.n_layer,
                   has_tied_embeddings=OUTPUT not in cats, has_imatrix=has_imatrix)


class StockModel:
    """llama_tensor_get_type_impl for one model and ftype; call `mix` in processing order."""

    def __init__(self, model: ModelFacts, ftype: str, state: StockState, output_tensor_type: T | None):
        self.model = model
        self.ftype = ftype
        self.state = state
        self.output_tensor_type = output_tensor_type

    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        n = self.state.n_ffn
        if max(1, self.model.n_expert) > 1:
            i = block_of(name)
            if i < 0:
                raise ValueError(f"Failed to determine layer for tensor {name}")
            if i >= n:
                raise ValueError(f"Bad layer {i} for tensor {name}. Must be in [0, {n})")
            return i, n
        return counter, n

    def _two(self, otherwise: T) -> T:
        return T.IQ3_S if self.ftype in ("IQ2_S", "IQ2_M") else otherwise

    def mix(self, name: str, ne: tuple[int, ...], new: T, cat: str) -> tuple[T, str]:
        f, m, s = self.ftype, self.model, self.state
        if m.arch == "glm5-next" and any(k in name for k in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new not in (T.F32, T.BF16, T.F16):
                return T.Q8_0, "stock:glm5-next/keep q8_0"
        if cat == OUTPUT or (s.has_tied_embeddings and cat == TOKEN_EMBD):
            return self._output(ne, new)
        if f == "MXFP4_MOE":
            stacked = len(ne) > 2 and ne[2] > 1
            expert = m.arch != "bailingmoe3" or cat in (FFN_UP, FFN_GATE, FFN_DOWN)
            return (T.MXFP4, "stock:mxfp4_moe/experts") if stacked and expert else (T.Q8_0, "stock:mxfp4_moe/other")
        if cat == TOKEN_EMBD:
            t = _TOKEN_EMBD.get(f)
            return (t, f"stock:token_embd/{f}") if t else (new, "default")
        if f in LOW_BIT:
            return self._low_bit(cat, new)
        if cat in _ATTN_V_LIKE:
            return self._attn_v(new)
        if cat == ATTENTION_K:
            if m.n_expert == 8:
                return T.Q8_0, "stock:attn_k n_expert==8"
            return {"IQ3_XS": (T.IQ3_XXS, "stock:attn_k/IQ3_XS"),
                    "IQ3_XXS": (T.IQ2_S, "stock:attn_k/IQ3_XXS")}.get(f, (new, "default"))
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

    def _output(self, ne, new: T) -> tuple[T, str]:
        if self.output_tensor_type is not None:  # reached only by a tied token_embd
            return self.output_tensor_type, "--output-tensor-type (tied token_embd)"
        f = self.ftype
        if f == "MXFP4_MOE":
            return T.Q8_0, "stock:output/mxfp4_moe"
        if self.model.arch == "falcon" or ne[0] % block_size(new) != 0:
            return T.Q8_0, "stock:output/falcon-or-row"
        if f in _OUTPUT_Q5K:
            return T.Q5_K, "stock:output/low-bit"
        if new != T.Q8_0:
            return T.Q6_K, "stock:output"
        return new, "stock:output/q8_0"

    def _low_bit(self, cat: str, new: T) -> tuple[T, str]:
        f, m, s = self.ftype, self.model, self.state
        if cat in _ATTN_V_LIKE:
            s.i_attention_wv += 1
            if m.n_gqa >= 4 or m.n_expert >= 4:
                return T.Q4_K, "stock:low-bit/attn_v-like gqa>=4|experts>=4"
            return self._two(T.Q2_K), "stock:low-bit/attn_v-like"
        if m.n_expert == 8 and cat == ATTENTION_K:
            return T.Q4_K, "stock:low-bit/attn_k n_expert==8"
        if cat == FFN_DOWN:
            i = s.i_ffn_down
            s.i_ffn_down += 1
            if i < s.n_ffn // 8:
                return self._two(T.Q2_K), "stock:low-bit/ffn_down tensor counter<blocks/8"
            return new, "default"
        if cat == ATTENTION_OUTPUT:
            if m.n_expert == 8:
                return T.Q5_K, "stock:low-bit/attn_output n_expert==8"
            if f in ("IQ1_S", "IQ1_M"):
                return T.IQ2_XXS, "stock:low-bit/attn_output"
            if f in ("IQ2_S", "IQ2_M"):
                return T.IQ3_S, "stock:low-bit/attn_output"
        return new, "default"

    def _attn_v(self, new: T) -> tuple[T, str]:
        f, m, s = self.ftype, self.model, self.state
        gqa4 = m.n_gqa >= 4
        t, why = new, "default"
        if f == "Q2_K":
            t, why = (T.Q4_K if gqa4 else T.Q3_K), "stock:attn_v-like/Q2_K"
        elif f == "Q2_K_S" and gqa4:
            t, why = T.Q4_K, "stock:attn_v-like/Q2_K_S gqa>=4"
        elif f == "IQ3_XXS":
            t = T.Q4_K if gqa4 else (T.IQ3_S if not s.has_imatrix else T.IQ3_XXS)
            why = "stock:attn_v-like/IQ3_XXS"
        elif f in ("IQ3_XS", "IQ3_S") and gqa4:
            t, why = T.Q4_K, f"stock:attn_v-like/{f} gqa>=4"
        elif f == "IQ3_M":
            t, why = T.Q4_K, "stock:attn_v-like/IQ3_M"
        elif f == "Q3_K_M":
            t, why = (T.Q5_K if s.i_attention_wv < 2 else T.Q4_K), "stock:attn_v-like/Q3_K_M first two"
        elif f == "Q3_K_L":
            t, why = T.Q5_K, "stock:attn_v-like/Q3_K_L"
        elif f in ("IQ4_NL", "IQ4_XS") and gqa4:
            t, why = T.Q5_K, f"stock:attn_v-like/{f} gqa>=4"
        elif f in ("Q4_K_M", "Q5_K_M") and use_more_bits(s.i_attention_wv, s.n_attention_wv):
            t, why = T.Q6_K, f"stock:attn_v-like/{f} use_more_bits"
        elif f == "Q4_K_S" and s.i_attention_wv < 4:
            t, why = T.Q5_K, "stock:attn_v-like/Q4_K_S first four"
        if is_70b(m) and t in (T.Q3_K, T.Q4_K):
            t, why = T.Q5_K, "stock:attn_v-like/70B"
        if m.n_expert == 8:
            t, why = T.Q8_0, "stock:attn_v-like n_expert==8"
        s.i_attention_wv += 1
        return t, why

    def _ffn_down(self, name: str, new: T) -> tuple[T, str]:
        f, m, s = self.ftype, self.model, self.state
        i, n = self._layer(s.i_ffn_down, name)
        falcon = m.arch == "falcon"
        t, why = new, "default"
        if f == "Q2_K":
            t, why = T.Q3_K, "stock:ffn_down/Q2_K"
        elif f == "Q2_K_S":
            if i < n // 8:
                t, why = T.Q4_K, "stock:ffn_down/Q2_K_S i<n/8"
        elif f == "IQ3_XXS" and not s.has_imatrix:
            t, why = (T.Q4_K if i < n // 8 else T.Q3_K), "stock:ffn_down/IQ3_XXS no imatrix"
        elif f == "Q3_K_M":
            if i < n // 16:
                t = T.Q5_K
            elif not falcon or use_more_bits(i, n):
                t = T.Q4_K
            else:
                t = T.Q3_K
            why = "stock:ffn_down/Q3_K_M"
        elif f == "IQ3_M" and (i < n // 8 or (m.n_expert == 8 and use_more_bits(i, n))):
            t, why = T.Q4_K, "stock:ffn_down/IQ3_M"
        elif f == "Q3_K_L":
            t, why = (T.Q4_K if falcon else T.Q5_K), "stock:ffn_down/Q3_K_L"
        elif f == "Q4_K_M":
            if falcon:
                t = T.Q6_K if i < n // 16 else (T.Q5_K if use_more_bits(i, n) else T.Q4_K)
                why = "stock:ffn_down/Q4_K_M falcon"
            elif use_more_bits(i, n):
                t, why = T.Q6_K, "stock:ffn_down/Q4_K_M use_more_bits"
        elif i < n // 8 and f in ("IQ4_NL", "IQ4_XS") and not s.has_imatrix:
            t, why = T.Q5_K, f"stock:ffn_down/{f} i<n/8 no imatrix"
        elif f == "Q5_K_M" and use_more_bits(i, n):
            t, why = T.Q6_K, "stock:ffn_down/Q5_K_M use_more_bits"
        elif f == "Q4_K_S" and not falcon and i < n // 8:
            t, why = T.Q5_K, "stock:ffn_down/Q4_K_S i<n/8"
        elif f in ("Q4_0", "Q5_0") and s.has_imatrix and i < n // 8:
            t, why = (T.Q4_1 if f == "Q4_0" else T.Q5_1), f"stock:ffn_down/{f} imatrix i<n/8"
        s.i_ffn_down += 1
        return t, why

    def _attn_output(self, new: T) -> tuple[T, str]:
        f, m = self.ftype, self.model
        if m.arch != "falcon":
            if m.n_expert == 8:
                if f in _ATTN_OUT_E8:
                    return T.Q5_K, "stock:attn_output n_expert==8"
                return new, "default"
            t = _ATTN_OUT.get(f)
            return (t, f"stock:attn_output/{f}") if t else (new, "default")
        if f == "Q3_K_L":
            return T.Q4_K, "stock:attn_output/falcon Q3_K_L"
        return new, "default"

    def _gate_up(self, name: str, new: T, counter: str, kind: str) -> tuple[T, str]:
        i, n = self._layer(getattr(self.state, counter), name)
        t, why = new, "default"
        if self.ftype == "IQ3_XS" and (i >= n // 8 and i < 7 * n // 8):
            t, why = T.IQ3_XXS, f"stock:{kind}/IQ3_XS middle"
        setattr(self.state, counter, getattr(self.state, counter) + 1)
        return t, why

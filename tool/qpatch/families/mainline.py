"""Stock type choice of mainline llama.cpp as 4227c9be / b6700 has it (src/llama-quant.cpp,
`llama_tensor_get_type`): what the mainline families share. The b6700 family uses it as it is; a later
mainline family subclasses `StockModel` where upstream changed a branch (families/current/stock.py).

Re-expressed as: a classifier that picks the branch a tensor falls into (the branch order and
the substring tests are llama.cpp's), then one function per branch, with the ftype tables
as data. Each decision carries a label naming the branch and the clause, which `qpatch plan`
shows as the deciding rule. The counters (`i_attention_wv`, `i_ffn_down`, `i_ffn_gate`,
`i_ffn_up`) live in `StockState` and advance exactly where stock advances them, because
stock's bumps read them in the low-bit branch and for dense models.

Proven against the compiled stock binary by tests/test_b6700_differential.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from qpatch.gguf.catalogue import T, block_size
from qpatch.gguf.model_facts import ModelFacts, block_of
from qpatch.predict.rules import use_more_bits

# The six very-low-bit ftypes that share one branch in stock.
LOW_BIT = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})

# output.weight (and a tied token_embd): ftypes that get Q5_K instead of Q6_K.
_OUTPUT_Q5K = frozenset({"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})

# token_embd.weight when not tied.
TOKEN_EMBD = {
    "IQ2_XXS": T.Q2_K, "IQ2_XS": T.Q2_K, "IQ1_S": T.Q2_K, "IQ1_M": T.Q2_K,
    "IQ2_S": T.IQ3_S, "IQ2_M": T.IQ3_S, "IQ3_XXS": T.IQ3_S,
    "TQ1_0": T.Q4_K, "TQ2_0": T.Q4_K,
}

# attn_output for n_expert == 8 (non-falcon): these ftypes get Q5_K.
_ATTN_OUT_E8 = frozenset({
    "Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS",
})
# attn_output otherwise (non-falcon).
_ATTN_OUT = {"Q2_K": T.Q3_K, "IQ3_XXS": T.IQ3_S, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K, "IQ3_M": T.Q4_K}

_ATTN_QKV = {"Q3_K_M": T.Q4_K, "Q3_K_L": T.Q4_K, "IQ3_M": T.Q4_K, "Q4_K_M": T.Q5_K, "Q5_K_M": T.Q6_K}

# Shape fallback when ne[0] is not a multiple of the chosen type's block size.
FALLBACK: dict[T, T] = {
    T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
    T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL, T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL,
    T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.Q2_K: T.IQ4_NL, T.Q3_K: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL,
    T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
}


# Architectures whose load_hparams maps 80 layers to LLM_TYPE_70B (4227c9be src/llama-model.cpp).
_ARCH_70B_AT_80 = frozenset({"deci", "qwen2", "olmo"})


def is_70b(m: ModelFacts) -> bool:
    """model.type == LLM_TYPE_70B as this family's load_hparams sets it."""
    if m.n_layer != 80:
        return False
    if m.arch == "llama":
        return m.n_expert != 8 and m.n_head != m.n_head_kv
    return m.arch in _ARCH_70B_AT_80


def stock_site(name: str) -> str:
    """The branch of llama_tensor_get_type that decides `name`, in its order of substring tests."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for sub, site in (("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                      ("ffn_down", "ffn_down"), ("attn_output.weight", "attn_output"), ("attn_qkv.weight", "attn_qkv"),
                      ("ffn_gate", "ffn_gate"), ("ffn_up", "ffn_up")):
        if sub in name:
            return site
    return "other"


@dataclass
class StockState:
    """quantize_state_impl's counters."""

    n_attention_wv: int = 0
    n_layer: int = 0
    has_output: bool = False
    has_imatrix: bool = False
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0

    @classmethod
    def for_tensors(cls, model: ModelFacts, names: list[str], has_imatrix: bool) -> "StockState":
        n_wv = sum(1 for n in names if "attn_v.weight" in n or "attn_qkv.weight" in n or "attn_kv_b.weight" in n)
        return cls(n_attention_wv=n_wv, n_layer=model.n_layer, has_output="output.weight" in names,
                   has_imatrix=has_imatrix)


class StockModel:
    """Stock choice for one model and ftype. Call `choose` in processing order."""

    def __init__(self, model: ModelFacts, ftype: str, state: StockState, output_tensor_type: T | None = None,
                 token_embedding_type: T | None = None):
        self.model = model
        self.ftype = ftype
        self.state = state
        self.output_tensor_type = output_tensor_type
        self.token_embedding_type = token_embedding_type

    # -- helpers mirroring the lambdas in llama_tensor_get_type
    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        """layer_info: the block index from the name for MoE models, else the running counter."""
        if max(1, self.model.n_expert) > 1:
            i = block_of(name)
            if i < 0:
                raise ValueError(f"Failed to determine layer for tensor {name}")
            return i, self.state.n_layer
        return counter, self.state.n_layer

    def _is_70b(self) -> bool:
        return is_70b(self.model)

    def _two(self, otherwise: T) -> T:
        return T.IQ3_S if self.ftype in ("IQ2_S", "IQ2_M") else otherwise

    # -- the branch classifier: llama.cpp's if/else-if order on names and ftype
    def choose(self, name: str, ne: tuple[int, ...], default: T) -> tuple[T, str]:
        f = self.ftype
        if name == "output.weight" or (not self.state.has_output and name == "token_embd.weight"):
            return self._output(ne, default)
        if f == "MXFP4_MOE":
            if len(ne) > 2 and ne[2] > 1:
                return T.MXFP4, "stock:mxfp4_moe/experts"
            return T.Q8_0, "stock:mxfp4_moe/other"
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return self._token_embd(default)
        if f in LOW_BIT:
            return self._low_bit(name, default)
        if "attn_v.weight" in name:
            return self._attn_v(default)
        if "attn_k.weight" in name:
            return self._attn_k(default)
        if "attn_q.weight" in name:
            return {"IQ3_XS": (T.IQ3_XXS, "stock:attn_q/IQ3_XS"), "IQ3_XXS": (T.IQ2_S, "stock:attn_q/IQ3_XXS")}.get(
                f, (default, "default"))
        if "ffn_down" in name:
            return self._ffn_down(name, default)
        if "attn_output.weight" in name:
            return self._attn_output(default)
        if "attn_qkv.weight" in name:
            t = _ATTN_QKV.get(f)
            return (t, f"stock:attn_qkv/{f}") if t else (default, "default")
        if "ffn_gate" in name:
            return self._gate_up(name, default, "i_ffn_gate", "ffn_gate")
        if "ffn_up" in name:
            return self._gate_up(name, default, "i_ffn_up", "ffn_up")
        return default, "default"

    # -- branches
    def _output(self, ne, default) -> tuple[T, str]:
        if self.output_tensor_type is not None:
            return self.output_tensor_type, "--output-tensor-type"
        f = self.ftype
        if f == "MXFP4_MOE":
            return T.Q8_0, "stock:output/mxfp4_moe"
        if self.model.arch == "falcon" or ne[0] % block_size(default) != 0:
            return T.Q8_0, "stock:output/falcon-or-row"
        if f in _OUTPUT_Q5K:
            return T.Q5_K, "stock:output/low-bit"
        if default != T.Q8_0:
            return T.Q6_K, "stock:output"
        return default, "stock:output/q8_0"

    def _token_embd(self, default) -> tuple[T, str]:
        # Stock sets --token-embedding-type here already, so the shape fallback (or its
        # "Unsupported tensor size" abort) sees the user's type, not the ftype's.
        if self.token_embedding_type is not None:
            return self.token_embedding_type, "--token-embedding-type"
        t = TOKEN_EMBD.get(self.ftype)
        return (t, f"stock:token_embd/{self.ftype}") if t else (default, "default")

    def _low_bit(self, name, default) -> tuple[T, str]:
        # its own substring tests, in this order: attn_v, attn_k, ffn_down, attn_output
        site = next((site for sub, site in (("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                                            ("ffn_down", "ffn_down"), ("attn_output.weight", "attn_output"))
                     if sub in name), "other")
        return self._low_bit_at(site, default)

    def _low_bit_at(self, site: str, default) -> tuple[T, str]:
        """The low-bit ftypes' branch for a tensor at `site` (the attn_v, attn_k, ffn_down or attn_output rules)."""
        f, m, s = self.ftype, self.model, self.state
        if site == "attn_v":
            s.i_attention_wv += 1
            if m.n_gqa >= 4 or m.n_expert >= 4:
                return T.Q4_K, "stock:low-bit/attn_v gqa>=4|experts>=4"
            return self._two(T.Q2_K), "stock:low-bit/attn_v"
        if m.n_expert == 8 and site == "attn_k":
            return T.Q4_K, "stock:low-bit/attn_k n_expert==8"
        if site == "ffn_down":
            i = s.i_ffn_down
            s.i_ffn_down += 1
            if i < s.n_layer // 8:
                return self._two(T.Q2_K), "stock:low-bit/ffn_down counter<n/8"
            return default, "default"
        if site == "attn_output":
            if m.n_expert == 8:
                return T.Q5_K, "stock:low-bit/attn_output n_expert==8"
            if f in ("IQ1_S", "IQ1_M"):
                return T.IQ2_XXS, "stock:low-bit/attn_output"
            if f in ("IQ2_S", "IQ2_M"):
                return T.IQ3_S, "stock:low-bit/attn_output"
        return default, "default"

    def _attn_v(self, default) -> tuple[T, str]:
        f, m, s = self.ftype, self.model, self.state
        gqa4 = m.n_gqa >= 4
        t, why = default, "default"
        if f == "Q2_K":
            t, why = (T.Q4_K if gqa4 else T.Q3_K), "stock:attn_v/Q2_K"
        elif f == "Q2_K_S" and gqa4:
            t, why = T.Q4_K, "stock:attn_v/Q2_K_S gqa>=4"
        elif f == "IQ3_XXS":
            t = T.Q4_K if gqa4 else (T.IQ3_S if not s.has_imatrix else T.IQ3_XXS)
            why = "stock:attn_v/IQ3_XXS"
        elif f in ("IQ3_XS", "IQ3_S") and gqa4:
            t, why = T.Q4_K, f"stock:attn_v/{f} gqa>=4"
        elif f == "IQ3_M":
            t, why = T.Q4_K, "stock:attn_v/IQ3_M"
        elif f == "Q3_K_M":
            t, why = (T.Q5_K if s.i_attention_wv < 2 else T.Q4_K), "stock:attn_v/Q3_K_M first two"
        elif f == "Q3_K_L":
            t, why = T.Q5_K, "stock:attn_v/Q3_K_L"
        elif f in ("IQ4_NL", "IQ4_XS") and gqa4:
            t, why = T.Q5_K, f"stock:attn_v/{f} gqa>=4"
        elif f in ("Q4_K_M", "Q5_K_M") and use_more_bits(s.i_attention_wv, s.n_attention_wv):
            t, why = T.Q6_K, f"stock:attn_v/{f} use_more_bits"
        elif f == "Q4_K_S" and s.i_attention_wv < 4:
            t, why = T.Q5_K, "stock:attn_v/Q4_K_S first four"
        if self._is_70b() and t in (T.Q3_K, T.Q4_K):
            t, why = T.Q5_K, "stock:attn_v/70B"
        if m.n_expert == 8:
            t, why = T.Q8_0, "stock:attn_v n_expert==8"
        s.i_attention_wv += 1
        return t, why

    def _attn_k(self, default) -> tuple[T, str]:
        if self.model.n_expert == 8:
            return T.Q8_0, "stock:attn_k n_expert==8"
        if self.ftype == "IQ3_XS":
            return T.IQ3_XXS, "stock:attn_k/IQ3_XS"
        if self.ftype == "IQ3_XXS":
            return T.IQ2_S, "stock:attn_k/IQ3_XXS"
        return default, "default"

    def _ffn_down(self, name, default) -> tuple[T, str]:
        f, m, s = self.ftype, self.model, self.state
        i, n = self._layer(s.i_ffn_down, name)
        falcon = m.arch == "falcon"
        t, why = default, "default"
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

    def _attn_output(self, default) -> tuple[T, str]:
        f, m = self.ftype, self.model
        if m.arch != "falcon":
            if m.n_expert == 8:
                if f in _ATTN_OUT_E8:
                    return T.Q5_K, "stock:attn_output n_expert==8"
                return default, "default"
            t = _ATTN_OUT.get(f)
            return (t, f"stock:attn_output/{f}") if t else (default, "default")
        if f == "Q3_K_L":
            return T.Q4_K, "stock:attn_output/falcon Q3_K_L"
        return default, "default"

    def _gate_up(self, name, default, counter: str, kind: str) -> tuple[T, str]:
        i, n = self._layer(getattr(self.state, counter), name)
        t, why = default, "default"
        if self.ftype == "IQ3_XS" and (i >= n // 8 and i < 7 * n // 8):
            t, why = T.IQ3_XXS, f"stock:{kind}/IQ3_XS middle"
        setattr(self.state, counter, getattr(self.state, counter) + 1)
        return t, why


def shape_fallback(t: T, ne0: int, table: dict[T, T] | None = None) -> tuple[T, bool, str]:
    """The shape fallback: (type, fell_back, label). Raises when stock has no fallback."""
    if ne0 % block_size(t) == 0:
        return t, False, ""
    table = FALLBACK if table is None else table
    if t not in table:
        raise ValueError(f"Unsupported tensor size encountered (ne0={ne0} for {t.name})")
    new = table[t]
    if ne0 % block_size(new) != 0:
        new = T.F16
    return new, True, f"fallback {t.name}->{new.name}"

"""ik_llama.cpp's stock type choice, as src/llama-quantize.cpp of pin ik-55d3c05b writes it.

A line-by-line model of `llama_tensor_get_type` (its if/else chain in the source's order),
`change_type_if_necessary` (the shape fallback), `interleaved_properties` (the row-interleaved
`_R4`/`_R8` types) and the model-type tests it makes. Names are ftype/type names as strings so the
chains read like the C++ they follow; tests/test_ik_llama_family.py proves them against the binary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qpatch.gguf.catalogue import T
from qpatch.gguf.model_facts import ModelFacts

QK_K = 256
QK_IQ1BN = 64

# change_type_if_necessary: the types that need rows of a multiple of QK_K ...
_NEEDS_QK_K = frozenset(T[n] for n in (
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XS", "IQ2_XXS", "IQ2_S", "IQ3_XXS", "IQ1_S", "IQ3_S",
    "IQ1_M", "IQ4_K", "IQ2_K", "IQ5_K", "IQ3_K", "Q4_K_R4", "IQ6_K", "IQ4_KS", "IQ4_XS_R8", "IQ2_KS", "IQ4_KSS",
    "Q6_K_R4", "Q5_K_R4", "Q3_K_R4", "Q2_K_R4", "IQ4_K_R4", "Q8_K_R8", "IQ3_K_R4", "IQ2_K_R4", "IQ5_K_R4",
    "IQ4_KS_R4", "IQ3_XXS_R4", "IQ2_XXS_R4", "IQ2_XS_R4", "IQ2_S_R4", "IQ3_S_R4", "IQ3_KS", "IQ2_KT", "IQ3_KT",
    "IQ4_KT", "IQ5_KS", "IQ5_KS_R4", "IQ2_KL", "IQ1_KT"))
# ... those that need a multiple of QK_IQ1BN ...
_NEEDS_QK_IQ1BN = frozenset({T.IQ1_BN, T.IQ2_BN, T.IQ2_BN_R4})
# ... and what each falls back to (a type missing here throws "Unsupported tensor size encountered").
FALLBACK: dict[T, T] = {
    **{T[n]: T.IQ4_NL for n in (
        "IQ2_XXS", "IQ2_XXS_R4", "IQ2_XS", "IQ2_XS_R4", "IQ2_KS", "IQ2_S", "IQ2_S_R4", "IQ3_XXS", "IQ3_XXS_R4",
        "IQ3_S", "IQ3_S_R4", "IQ1_S", "IQ1_M", "Q2_K", "Q2_K_R4", "Q3_K", "Q3_K_R4", "IQ2_K", "IQ2_K_R4", "IQ2_KL",
        "IQ3_KS", "IQ3_K", "IQ3_K_R4", "IQ4_KSS", "IQ4_KS", "IQ4_KS_R4", "IQ4_XS_R8", "IQ1_KT", "IQ2_KT", "IQ3_KT",
        "IQ4_KT", "IQ4_XS")},
    **{T[n]: T.Q5_0 for n in ("IQ4_K", "IQ4_K_R4", "Q4_K_R4", "IQ5_KS", "IQ5_KS_R4", "Q4_K")},
    **{T[n]: T.Q6_0 for n in ("IQ5_K", "IQ5_K_R4", "Q5_K_R4", "Q5_K")},
    **{T[n]: T.Q8_0 for n in ("IQ6_K", "Q6_K_R4", "Q8_K_R8", "Q6_K")},
}

# interleaved_properties: a row-interleaved type -> (its plain type, rows interleaved)
INTERLEAVED: dict[T, tuple[T, int]] = {T[a]: (T[b], n) for a, b, n in (
    ("Q4_0_4_4", "Q4_0", 4), ("Q4_0_4_8", "Q4_0", 4), ("Q4_0_8_8", "Q4_0", 8), ("Q4_0_R8", "Q4_0", 8),
    ("Q5_0_R4", "Q5_0", 4), ("Q6_0_R4", "Q6_0", 4), ("Q8_0_R8", "Q8_0", 8), ("Q2_K_R4", "Q2_K", 4),
    ("Q3_K_R4", "Q3_K", 4), ("Q4_K_R4", "Q4_K", 4), ("Q5_K_R4", "Q5_K", 4), ("Q6_K_R4", "Q6_K", 4),
    ("IQ2_XXS_R4", "IQ2_XXS", 4), ("IQ2_XS_R4", "IQ2_XS", 4), ("IQ2_S_R4", "IQ2_S", 4),
    ("IQ3_XXS_R4", "IQ3_XXS", 4), ("IQ3_S_R4", "IQ3_S", 4), ("IQ4_XS_R8", "IQ4_XS", 8),
    ("IQ4_NL_R4", "IQ4_NL", 4), ("IQ1_S_R4", "IQ1_S", 4), ("IQ1_M_R4", "IQ1_M", 4), ("IQ2_BN_R4", "IQ2_BN", 4),
    ("IQ2_K_R4", "IQ2_K", 4), ("IQ3_K_R4", "IQ3_K", 4), ("IQ4_K_R4", "IQ4_K", 4), ("IQ4_KS_R4", "IQ4_KS", 4),
    ("IQ5_KS_R4", "IQ5_KS", 4), ("IQ5_K_R4", "IQ5_K", 4), ("Q8_KV_R8", "Q8_KV", 8), ("Q8_K_R8", "Q8_0", 8),
    ("BF16_R16", "BF16", 16))}

# The quantize loop's very-low-bit types, refused without imatrix data (unless --ignore-imatrix-rules).
VERY_LOW_BPW = frozenset(T[n] for n in ("IQ2_XXS", "IQ2_XXS_R4", "IQ2_XS", "IQ2_XS_R4", "IQ2_S", "IQ2_S_R4",
                                        "IQ1_S", "IQ1_S_R4", "IQ1_M", "IQ1_M_R4", "IQ1_KT", "IQ2_KT"))


class NoFallback(ValueError):
    """change_type_if_necessary throws: a type with no fallback does not fit the row."""


def shape_fallback(t: T, nx: int, table: dict[T, T] | None = None) -> tuple[T, bool]:
    """change_type_if_necessary(t, nx, ny): (type, fell back). `table` is a policy's (stock's when None)."""
    bad = (t in _NEEDS_QK_K and nx % QK_K != 0) or (t in _NEEDS_QK_IQ1BN and nx % QK_IQ1BN != 0)
    if not bad:
        return t, False
    fb = (table if table is not None else FALLBACK).get(t)
    if fb is None:
        raise NoFallback(f"Unsupported tensor size encountered ({t.name} on rows of {nx})")
    return fb, True


def uninterleaved(t: T) -> T:
    return INTERLEAVED.get(t, (t, 1))[0]


# Architectures and block counts llm_load_hparams maps to MODEL_70B / MODEL_8B (src/llama-hparams.cpp).
def model_type(m: ModelFacts) -> str:
    n, arch = m.n_layer, m.arch
    if arch == "llama":
        if m.n_expert == 8:
            return ""
        if n == 32:
            vocab = n_vocab(m)
            return "8B" if vocab != 49152 and vocab >= 40000 else ""
        if n == 36:
            return "8B"
        if n == 80:
            return "70B" if m.n_head != m.n_head_kv else ""
        return ""
    if arch in ("deci", "qwen2", "olmo") and n == 80:
        return "70B"
    if arch in ("qwen3", "qwen3vl") and n == 36 and m.n_embd != 2560:
        return "8B"
    if (arch, n) in (("cohere2", 32), ("mistral3", 34)):
        return "8B"
    return ""


def n_vocab(m: ModelFacts) -> int:
    """hparams.n_vocab: {arch}.vocab_size, else the tokenizer's token count."""
    if m.n_vocab is not None:
        return m.n_vocab
    return m.n_tokens or 0


@dataclass
class StockState:
    """quantize_state_internal: counts made in the pre-pass, counters advanced by type choice."""

    n_attention_wv: int = 0
    has_output: bool = False
    has_imatrix: bool = False
    n_layer: int = 0
    i: dict[str, int] = field(default_factory=lambda: {"attention_wv": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0})


_BLK = re.compile(r"blk\.(-?\d+)\.")


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or _cmod(i - n // 8, 3) == 2


def _cmod(a: int, b: int) -> int:
    r = abs(a) % b
    return -r if a < 0 else r


_IQ1_R4_TYPES = {"v4": T.IQ4_K_R4, "v2": T.IQ3_K_R4, "v1": T.Q2_K_R4, "attn_k": T.Q4_K_R4, "blk0": T.IQ3_K_R4,
                 "qkv": T.IQ2_K_R4, "shexp": T.IQ4_K_R4, "down": T.Q2_K_R4, "out4": T.Q5_K_R4, "out": T.IQ2_K_R4}
_IQ2_KT_TYPES = {"v4": T.IQ4_K, "v2": T.IQ3_K, "v1": T.Q2_K, "attn_k": T.Q4_K, "blk0": T.IQ3_K,
                 "qkv": T.IQ3_K, "shexp": T.IQ4_K, "down": T.IQ3_K, "out4": T.Q5_K, "out": T.IQ3_K}


class StockModel:
    """llama_tensor_get_type, before the policy hook, --custom-q and the shape fallback."""

    def __init__(self, m: ModelFacts, ftype: str, st: StockState, kind_types: dict[str, T]):
        self.model, self.ftype, self.state, self.kind_types = m, ftype, st, kind_types
        self.n_expert = m.n_expert  # hparams.n_expert (layer_info uses max(1, n_expert))
        self.gqa = m.n_gqa
        self.type = model_type(m)

    def layer_info(self, counter: str, name: str) -> tuple[int, int]:
        n_layer = self.state.n_layer
        if max(1, self.n_expert) > 1:
            mm = _BLK.match(name)
            if not mm:
                raise ValueError(f"Failed to determine layer for tensor {name}")
            i = int(mm.group(1))
            if i < 0 or i >= n_layer:
                raise ValueError(f"Bad layer {i} for tensor {name}. Must be in [0, {n_layer})")
            return i, n_layer
        return self.state.i[counter], n_layer

    def choose(self, name: str, shape: tuple[int, ...], new: T) -> tuple[T, str]:
        """Stock's type for `name` (default type `new`) and the branch that set it."""
        f, ne, gqa, st, opt = self.ftype, self.n_expert, self.gqa, self.state, self.kind_types
        t, why = self._choose(name, shape, new, f, ne, gqa, st, opt)
        return t, why

    def _choose(self, name, shape, new, f, ne, gqa, st, opt):  # noqa: C901 - one chain, as in the source
        i = st.i
        if name == "output.weight" or (not st.has_output and name == "token_embd.weight"):
            if "output_tensor_type" in opt:
                return opt["output_tensor_type"], "--output-tensor-type"
            nx = shape[0]
            if self.model.arch == "falcon" or nx % QK_K != 0:
                return T.Q8_0, "stock:output/row"
            if f in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M", "IQ2_K", "IQ3_K", "IQ2_KS",
                     "IQ3_K_R4", "IQ3_KS", "IQ2_K_R4", "IQ3_XXS_R4", "IQ2_KL", "IQ2_M_R4", "IQ1_S_R4",
                     "IQ1_M_R4", "IQ2_KT", "IQ3_KT", "IQ1_KT"):
                return (T.IQ4_K if not st.has_output else T.Q5_K), "stock:output/low-bit"
            if f in ("IQ2_XXS_R4", "IQ2_XS_R4"):
                return (T.IQ4_K_R4 if not st.has_output else T.Q5_K_R4), "stock:output/low-bit"
            if f in ("IQ3_S", "IQ3_M", "IQ3_KL", "IQ4_XS", "IQ3_S_R4", "IQ4_KS", "IQ4_KSS", "IQ4_KS_R4") \
                    and not st.has_output:
                return T.IQ5_K, "stock:output/tied"
            if new not in (T.Q8_0, T.Q8_0_R8, T.IQ6_K, T.Q6_K_R4, T.Q8_K_R8, T.Q8_KV, T.Q8_KV_R8):
                return T.Q6_K, "stock:output"
            return new, "stock:output"
        if name == "token_embd.weight":
            if "token_embedding_type" in opt:
                return opt["token_embedding_type"], "--token-embedding-type"
            if f in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M", "IQ2_XXS_R4", "IQ2_XS_R4", "IQ1_S_R4", "IQ1_M_R4"):
                return T.Q2_K, "stock:token_embd"
            if f in ("IQ2_S", "IQ2_M", "IQ2_M_R4", "IQ3_XXS", "IQ3_KT"):
                return T.IQ3_S, "stock:token_embd"
            if f == "IQ3_XXS_R4":
                return T.IQ3_K, "stock:token_embd"
            if f in ("IQ1_BN", "IQ2_BN", "IQ2_BN_R4"):
                return T.IQ4_NL, "stock:token_embd"
            return new, "ftype default"
        if f in ("IQ1_S_R4", "IQ1_M_R4"):
            return self._iq1_r4(name, new, ne, gqa, i, opt)
        if f == "IQ2_KT":
            return self._iq2_kt(name, new, ne, gqa, i, opt)
        if f in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M", "IQ2_KS", "IQ2_XXS_R4", "IQ2_XS_R4",
                 "IQ2_M_R4"):
            return self._low_bit(name, new, f, ne, gqa, i, opt)
        if "attn_v.weight" in name:
            t, why = self._attn_v(new, f, ne, gqa, i, opt)
            i["attention_wv"] += 1
            return t, why
        if "attn_k" in name:
            if "attn_k_type" in opt:
                return opt["attn_k_type"], "--attn-k-type"
            if ne >= 4:
                return T.Q8_0, "stock:attn_k/n_expert>=4"
            if f == "IQ3_XS":
                return T.IQ3_XXS, "stock:attn_k"
            if f in ("IQ3_XXS", "IQ3_XXS_R4"):
                return T.IQ2_S, "stock:attn_k"
            return new, "ftype default"
        if "attn_q" in name:
            if "attn_q_type" in opt:
                return opt["attn_q_type"], "--attn-q-type"
            if f == "IQ3_XS":
                return T.IQ3_XXS, "stock:attn_q"
            if f in ("IQ3_XXS", "IQ3_XXS_R4"):
                return T.IQ2_S, "stock:attn_q"
            big = n_vocab(self.model) >= 127999 and self.type in ("8B", "70B")
            if f == "Q5_K_S":
                return (T.Q4_K, "stock:attn_q/8B-70B") if big else (new, "ftype default")
            if f == "IQ5_K":
                return (T.IQ4_K, "stock:attn_q/8B-70B") if big else (new, "ftype default")
            if f == "IQ5_KS":
                return (T.IQ4_KS, "stock:attn_q/8B-70B") if big else (new, "ftype default")
            return new, "ftype default"
        if "ffn_down" in name:
            t, why = self._ffn_down(name, new, f, ne, i, opt)
            i["ffn_down"] += 1
            return t, why
        if "attn_output.weight" in name:
            return self._attn_output(new, f, ne, gqa, opt)
        if "attn_qkv.weight" in name:
            if "attn_qkv_type" in opt:
                return opt["attn_qkv_type"], "--attn-qkv-type"
            if f in ("Q3_K_M", "Q3_K_L"):
                return T.Q4_K, "stock:attn_qkv"
            return {"IQ3_M": T.IQ4_K, "Q4_K_M": T.Q5_K, "Q5_K_M": T.Q6_K}.get(f, new), "stock:attn_qkv"
        for part in ("ffn_gate", "ffn_up"):
            if part in name:
                il, nl = self.layer_info(part, name)
                t, why = new, "ftype default"
                if f"{part}_type" in opt:
                    t, why = opt[f"{part}_type"], f"--{part.replace('_', '-')}-type"
                elif f == "IQ3_XS" and nl // 8 <= il < 7 * nl // 8:
                    t, why = T.IQ3_XXS, f"stock:{part}"
                elif f == "IQ3_KL" and _more_bits(il, nl):
                    t, why = T.IQ4_KS, f"stock:{part}/more-bits"
                i[part] += 1
                return t, why
        return new, "ftype default"

    # --- the three ftype groups that have a chain of their own --------------------------------------

    def _iq1_r4(self, name, new, ne, gqa, i, opt):
        return self._own_chain(name, new, ne, gqa, i, opt, "IQ1_R4", _IQ1_R4_TYPES)

    def _iq2_kt(self, name, new, ne, gqa, i, opt):
        return self._own_chain(name, new, ne, gqa, i, opt, "IQ2_KT", _IQ2_KT_TYPES)

    def _own_chain(self, name, new, ne, gqa, i, opt, label, ty):
        """The chain IQ1_S_R4/IQ1_M_R4 and IQ2_KT each have (the same tests, each with its own types)."""
        if "attn_v.weight" in name:
            t = ty["v4"] if (ne >= 4 or gqa >= 4) else ty["v2"] if gqa >= 2 else ty["v1"]
            i["attention_wv"] += 1
            return t, f"stock:{label}/attn_v"
        if ne >= 8 and "attn_k" in name:
            return ty["attn_k"], f"stock:{label}/attn_k"
        if ne >= 8 and any(s in name for s in ("blk.0.ffn_down", "blk.0.ffn_gate", "blk.0.ffn_up")):
            return ty["blk0"], f"stock:{label}/blk.0 ffn"
        if ne >= 8 and "attn_q" in name:
            return ty["attn_k"], f"stock:{label}/attn_q"
        if "attn_qkv.weight" in name:
            return ty["qkv"], f"stock:{label}/attn_qkv"
        if "_shexp.weight" in name:
            return ty["shexp"], f"stock:{label}/shexp"
        if "ffn_down" in name:
            il, nl = self.layer_info("ffn_down", name)
            t, why = new, "ftype default"
            if "ffn_down_type" in opt:
                t, why = opt["ffn_down_type"], "--ffn-down-type"
            elif il < nl // 8:
                t, why = ty["down"], f"stock:{label}/ffn_down first eighth"
            i["ffn_down"] += 1
            return t, why
        if "attn_output.weight" in name:
            return (ty["out4"] if ne >= 4 else ty["out"]), f"stock:{label}/attn_output"
        return new, "ftype default"

    def _low_bit(self, name, new, f, ne, gqa, i, opt):
        iq2_m = f in ("IQ2_M", "IQ2_M_R4")
        s_or_m = f == "IQ2_S" or iq2_m
        if "attn_v.weight" in name:
            if gqa >= 4 or ne >= 4:
                t = T.IQ4_K
            elif gqa >= 2 or ne >= 2:
                t = T.IQ3_K
            else:
                t = T.IQ3_S if s_or_m else T.Q2_K
            i["attention_wv"] += 1
            return t, "stock:low-bit/attn_v"
        if ne >= 8 and "attn_k" in name:
            return T.Q4_K, "stock:low-bit/attn_k"
        if ne >= 8 and "attn_q" in name:
            return T.Q4_K, "stock:low-bit/attn_q"
        if "attn_qkv.weight" in name:
            return (T.IQ3_XXS if s_or_m else T.IQ2_K), "stock:low-bit/attn_qkv"
        if "ffn_down" in name:
            t, why = new, "ftype default"
            if i["ffn_down"] < st_div8(self.state.n_layer):
                t, why = (T.IQ3_S if s_or_m else T.Q2_K), "stock:low-bit/ffn_down first eighth (counter)"
            i["ffn_down"] += 1
            return t, why
        if "attn_output.weight" in name:
            if "attn_output_type" in opt:
                return opt["attn_output_type"], "--attn-output-type"
            if ne >= 4:
                return T.Q5_K, "stock:low-bit/attn_output n_expert>=4"
            if f in ("IQ1_S", "IQ1_M"):
                return T.IQ2_K, "stock:low-bit/attn_output"
            if s_or_m:
                return T.IQ3_S, "stock:low-bit/attn_output"
            return new, "ftype default"
        return new, "ftype default"

    # --- the general chain ---------------------------------------------------------------------------

    def _attn_v(self, new, f, ne, gqa, i, opt):
        if "attn_v_type" in opt:
            return opt["attn_v_type"], "--attn-v-type"
        if ne >= 4:
            return T.Q8_0, "stock:attn_v/n_expert>=4"
        if self.type == "70B":
            if new in (T.Q3_K, T.Q4_K):
                new = T.Q5_K
            if new == T.IQ3_K:
                new = T.IQ5_K
            return new, "stock:attn_v/70B"
        why = "stock:attn_v"
        if f == "Q2_K":
            return (T.Q4_K if gqa >= 4 else T.Q3_K), why
        if f == "IQ2_K":
            return (T.IQ4_K if gqa >= 2 else T.IQ3_K), why
        if f == "IQ2_K_R4":
            return (T.IQ4_K_R4 if gqa >= 2 else T.IQ3_K_R4), why
        if f == "Q2_K_S" and gqa >= 4:
            return T.Q4_K, why
        if f == "Q2_K_R4" and gqa >= 4:
            return T.Q4_K_R4, why
        if f == "IQ3_XXS":
            return (T.Q4_K if gqa >= 4 else T.IQ3_K if gqa >= 2
                    else T.IQ3_S if not self.state.has_imatrix else T.IQ3_XXS), why
        if f == "IQ3_KT":
            return (T.IQ4_K if gqa >= 4 else T.IQ3_K), why
        if f == "IQ4_KT":
            return (T.IQ5_K if gqa >= 4 else T.IQ4_K), why
        if f == "IQ3_XXS_R4":
            return (T.Q4_K_R4 if gqa >= 4 else T.IQ3_K_R4 if gqa >= 2
                    else T.IQ3_K_R4 if not self.state.has_imatrix else T.IQ3_XXS_R4), why
        if f in ("IQ3_XS", "IQ3_S") and gqa >= 2:
            return T.IQ4_K, why
        if f == "IQ3_S_R4" and gqa >= 2:
            return T.IQ4_K_R4, why
        if f == "IQ3_K" and gqa >= 2:
            return T.IQ4_K, why
        if f in ("IQ3_KS", "IQ2_KL") and gqa >= 2:
            return T.IQ4_KS, why
        if f == "IQ3_K_R4" and gqa >= 2:
            return T.IQ4_K_R4, why
        if f in ("IQ3_KL", "IQ3_M"):
            return (T.IQ5_K if gqa >= 2 else T.IQ4_K), why
        if f == "Q3_K_M":
            return (T.Q5_K if i["attention_wv"] < 2 else T.Q4_K), why
        if f == "Q3_K_L":
            return T.Q5_K, why
        if f in ("IQ4_NL", "IQ4_XS", "IQ4_NL_R4", "IQ4_XS_R8", "IQ4_KS", "IQ4_KSS") and gqa >= 2:
            return T.IQ5_K, why
        if f == "IQ4_KS_R4" and gqa >= 2:
            return T.IQ5_K_R4, why
        if f in ("IQ4_K", "IQ4_K_R4") and gqa >= 2:
            return T.IQ5_K, why
        if f in ("Q4_K_M", "Q5_K_M") and _more_bits(i["attention_wv"], self.state.n_attention_wv):
            return T.Q6_K, "stock:attn_v/more-bits"
        if f in ("Q4_K_S", "Q4_K_R4") and i["attention_wv"] < 4:
            return T.Q5_K, why
        big = n_vocab(self.model) >= 127999 and self.type in ("8B", "70B")
        if f == "Q5_K_S":
            return (T.Q6_K, why) if big else (new, "ftype default")
        if f in ("IQ5_K", "IQ5_KS"):
            return (T.IQ6_K, why) if big else (new, "ftype default")
        if gqa >= 4:
            bump = {T.Q2_K: T.IQ3_S, T.IQ3_XXS: T.IQ3_S, T.Q2_K_R4: T.IQ3_K_R4, T.IQ3_XXS_R4: T.IQ3_K_R4,
                    T.Q3_K: T.Q4_K, T.IQ3_S: T.Q4_K, T.IQ3_K: T.IQ4_K, T.IQ3_KS: T.IQ4_KS, T.IQ2_KL: T.IQ4_KS,
                    T.IQ3_S_R4: T.Q4_K_R4, T.Q3_K_R4: T.Q4_K_R4, T.Q4_K: T.Q5_K, T.IQ4_XS: T.Q5_K,
                    T.IQ4_NL: T.Q5_K, T.IQ4_K: T.IQ5_K, T.IQ4_KS: T.IQ5_K, T.IQ4_NL_R4: T.Q5_K,
                    T.IQ4_XS_R8: T.Q5_K, T.Q5_K: T.Q6_K, T.IQ5_K: T.IQ6_K, T.IQ5_KS: T.IQ6_K}
            if new in bump:
                return bump[new], "stock:attn_v/n_gqa>=4"
        return new, "ftype default"

    def _ffn_down(self, name, new, f, ne, i, opt):
        il, nl = self.layer_info("ffn_down", name)
        imat = self.state.has_imatrix
        why = "stock:ffn_down"
        if "ffn_down_type" in opt:
            return opt["ffn_down_type"], "--ffn-down-type"
        if f == "Q2_K":
            return T.Q3_K, why
        if f == "Q2_K_S":
            return (T.Q4_K, why) if il < nl // 8 else (new, "ftype default")
        if f == "Q2_K_R4":
            return (T.Q4_K_R4, why) if il < nl // 8 else (new, "ftype default")
        if f == "IQ3_XXS" and not imat:
            return (T.Q4_K if il < nl // 8 else T.Q3_K), why
        if f == "IQ3_KT" and not imat:
            return (T.IQ4_K if il < nl // 8 else T.IQ3_K), why
        if f == "IQ3_XXS_R4" and not imat:
            return (T.Q4_K_R4 if il < nl // 8 else T.IQ3_K_R4), why
        falcon = self.model.arch == "falcon"
        if f == "Q3_K_M":
            return (T.Q5_K if il < nl // 16 else T.Q4_K if (not falcon or _more_bits(il, nl)) else T.Q3_K), why
        if f == "IQ3_M" and (il < nl // 8 or (ne >= 4 and _more_bits(il, nl))):
            return T.IQ4_K, why
        if f == "Q3_K_L":
            return (T.Q4_K if falcon else T.Q5_K), why
        if f == "IQ3_KL":
            return (T.IQ4_KS if _more_bits(il, nl) else T.IQ3_K), why
        if f == "Q4_K_M":
            if falcon:
                return (T.Q6_K if il < nl // 16 else T.Q5_K if _more_bits(il, nl) else T.Q4_K), why
            return (T.Q6_K, why) if _more_bits(il, nl) else (new, "ftype default")
        if il < nl // 8 and not imat and f in ("IQ4_NL", "IQ4_XS", "IQ4_KS", "IQ4_KSS", "IQ4_NL_R4", "IQ4_XS_R8"):
            return T.Q5_K, why
        if f == "IQ4_KS_R4" and il < nl // 8 and not imat:
            return T.Q5_K_R4, why
        if f == "Q5_K_M" and _more_bits(il, nl):
            return T.Q6_K, why
        if f in ("Q4_K_S", "Q4_K_R4") and not falcon and il < nl // 8:
            return T.Q5_K, why
        if f in ("Q4_0", "Q5_0") and imat and il < nl // 8:
            return (T.Q4_1 if f == "Q4_0" else T.Q5_1), why
        if f == "Q4_0_R8" and imat and il < nl // 8:
            return T.IQ4_NL_R4, why
        return new, "ftype default"

    def _attn_output(self, new, f, ne, gqa, opt):
        if "attn_output_type" in opt:
            return opt["attn_output_type"], "--attn-output-type"
        why = "stock:attn_output"
        if self.model.arch != "falcon":
            if ne >= 4:
                if f in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                         "IQ3_M", "IQ4_XS", "IQ4_K", "IQ4_KSS", "IQ4_KS", "IQ4_KS_R4", "IQ5_KS", "IQ5_KS_R4",
                         "IQ2_K", "IQ3_K", "IQ3_KL", "Q4_K_R4", "IQ4_NL_R4", "IQ4_XS_R8", "Q3_K_R4", "IQ3_KT",
                         "IQ3_KS", "Q2_K_R4", "IQ4_K_R4", "IQ3_K_R4", "IQ2_K_R4", "IQ3_XXS_R4", "IQ3_S_R4"):
                    return T.Q5_K, "stock:attn_output/n_expert>=4"
                if f == "IQ2_KL":
                    return T.IQ4_KS, "stock:attn_output/n_expert>=4"
                return new, "ftype default"
            if f == "Q2_K":
                return T.Q3_K, why
            if f == "IQ3_XXS":
                return T.IQ3_S, why
            if f == "IQ3_KT" and gqa >= 4:
                return T.IQ3_K, why
            table = {"IQ3_XXS_R4": T.IQ3_K_R4, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K, "IQ3_M": T.IQ4_K,
                     "IQ2_K": T.IQ3_K, "IQ2_K_R4": T.IQ3_K_R4, "IQ3_KL": T.IQ4_KS}
            if f in table:
                return table[f], why
            return new, "ftype default"
        if f == "Q3_K_L":
            return T.Q4_K, why
        return new, "ftype default"


def st_div8(n: int) -> int:
    return n // 8

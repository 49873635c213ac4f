"""ggml types and llama ftypes as the pinned llama-quantize knows them.

Ids and block sizes come from the `gguf` package; the lists of names are the pin's
(`QUANT_OPTIONS` in tools/quantize/quantize.cpp and the default-type switch in
`llama_model_quantize_impl`), because the `gguf` package may know newer types than the pin.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gguf_constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from .errors import UsageError

T = GGMLQuantizationType

# ggml types that the pin can produce or accept on the command line (ggml_type_name lowercased).
KNOWN_TYPES: tuple[T, ...] = (
    T.F32, T.F16, T.BF16,
    T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
    T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
    T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.IQ4_NL, T.IQ4_XS,
    T.TQ1_0, T.TQ2_0, T.MXFP4,
)

UNQUANTIZED = frozenset({T.F32, T.F16, T.BF16})


def block_size(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


def type_bytes(t: T) -> int:
    """Bytes per block (per element for F32/F16/BF16)."""
    return GGML_QUANT_SIZES[t][1]


def row_bytes(t: T, n: int) -> int:
    return n // block_size(t) * type_bytes(t)


def tensor_bytes(t: T, shape: tuple[int, ...]) -> int:
    rows = 1
    for d in shape[1:]:
        rows *= d
    return row_bytes(t, shape[0]) * rows


def is_quantized(t: T) -> bool:
    return t not in UNQUANTIZED and t not in (T.I8, T.I16, T.I32, T.I64, T.F64)


def parse_type(text: str, *, what: str = "type") -> T:
    """A ggml type name as llama-quantize accepts it (case-insensitive, e.g. q4_k, IQ2_XXS)."""
    key = text.strip().upper()
    for t in KNOWN_TYPES:
        if t.name == key:
            return t
    names = ", ".join(t.name.lower() for t in KNOWN_TYPES)
    raise UsageError(f"unknown ggml {what} '{text}'", hint=f"known types: {names}")


@dataclass(frozen=True)
class Ftype:
    """A llama ftype: the name llama-quantize accepts, its id, and its default ggml type."""

    name: str  # canonical name as in QUANT_OPTIONS, e.g. Q4_K_M
    id: int  # llama_ftype value
    default: T  # default_type in llama_model_quantize_impl
    copy: bool = False  # COPY: only copy tensors

    @property
    def quantizes(self) -> bool:
        """Whether llama_tensor_get_type runs at all (it does only for quantized default types)."""
        return is_quantized(self.default)


F = LlamaFileType

# Order follows QUANT_OPTIONS of the pin (4227c9be / b6700 family, unchanged in 49bfddeca).
FTYPES: tuple[Ftype, ...] = (
    Ftype("Q4_0", F.MOSTLY_Q4_0, T.Q4_0),
    Ftype("Q4_1", F.MOSTLY_Q4_1, T.Q4_1),
    Ftype("MXFP4_MOE", F.MOSTLY_MXFP4_MOE, T.MXFP4),
    Ftype("Q5_0", F.MOSTLY_Q5_0, T.Q5_0),
    Ftype("Q5_1", F.MOSTLY_Q5_1, T.Q5_1),
    Ftype("IQ2_XXS", F.MOSTLY_IQ2_XXS, T.IQ2_XXS),
    Ftype("IQ2_XS", F.MOSTLY_IQ2_XS, T.IQ2_XS),
    Ftype("IQ2_S", F.MOSTLY_IQ2_S, T.IQ2_XS),
    Ftype("IQ2_M", F.MOSTLY_IQ2_M, T.IQ2_S),
    Ftype("IQ1_S", F.MOSTLY_IQ1_S, T.IQ1_S),
    Ftype("IQ1_M", F.MOSTLY_IQ1_M, T.IQ1_M),
    Ftype("TQ1_0", F.MOSTLY_TQ1_0, T.TQ1_0),
    Ftype("TQ2_0", F.MOSTLY_TQ2_0, T.TQ2_0),
    Ftype("Q2_K", F.MOSTLY_Q2_K, T.Q2_K),
    Ftype("Q2_K_S", F.MOSTLY_Q2_K_S, T.Q2_K),
    Ftype("IQ3_XXS", F.MOSTLY_IQ3_XXS, T.IQ3_XXS),
    Ftype("IQ3_S", F.MOSTLY_IQ3_S, T.IQ3_S),
    Ftype("IQ3_M", F.MOSTLY_IQ3_M, T.IQ3_S),
    Ftype("IQ3_XS", F.MOSTLY_IQ3_XS, T.IQ3_S),
    Ftype("Q3_K_S", F.MOSTLY_Q3_K_S, T.Q3_K),
    Ftype("Q3_K_M", F.MOSTLY_Q3_K_M, T.Q3_K),
    Ftype("Q3_K_L", F.MOSTLY_Q3_K_L, T.Q3_K),
    Ftype("IQ4_NL", F.MOSTLY_IQ4_NL, T.IQ4_NL),
    Ftype("IQ4_XS", F.MOSTLY_IQ4_XS, T.IQ4_XS),
    Ftype("Q4_K_S", F.MOSTLY_Q4_K_S, T.Q4_K),
    Ftype("Q4_K_M", F.MOSTLY_Q4_K_M, T.Q4_K),
    Ftype("Q5_K_S", F.MOSTLY_Q5_K_S, T.Q5_K),
    Ftype("Q5_K_M", F.MOSTLY_Q5_K_M, T.Q5_K),
    Ftype("Q6_K", F.MOSTLY_Q6_K, T.Q6_K),
    Ftype("Q8_0", F.MOSTLY_Q8_0, T.Q8_0),
    Ftype("F16", F.MOSTLY_F16, T.F16),
    Ftype("BF16", F.MOSTLY_BF16, T.BF16),
    Ftype("F32", F.ALL_F32, T.F32),
    Ftype("COPY", F.ALL_F32, T.F32, copy=True),
)

# llama-quantize's aliases (QUANT_OPTIONS "alias for ...").
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

BY_NAME = {f.name: f for f in FTYPES}

# ftypes llama-quantize refuses to run without an imatrix (main() of quantize.cpp).
NEEDS_IMATRIX = frozenset({"IQ2_XS", "IQ2_XXS", "IQ2_S", "Q2_K_S", "IQ1_S", "IQ1_M"})


def parse_ftype(text: str) -> Ftype:
    """An ftype by name (case-insensitive, aliases allowed) or by numeric id, like llama-quantize."""
    key = text.strip().upper()
    key = ALIASES.get(key, key)
    if key in BY_NAME:
        return BY_NAME[key]
    if key.isdigit():
        for f in FTYPES:
            if f.id == int(key) and not f.copy:
                return f
    names = ", ".join(f.name for f in FTYPES)
    raise UsageError(f"unknown ftype '{text}'", hint=f"llama-quantize accepts: {names} (aliases Q3_K, Q4_K, Q5_K)")


def ftype_by_id(value: int) -> Ftype | None:
    for f in FTYPES:
        if f.id == value and not f.copy:
            return f
    return None

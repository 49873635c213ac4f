"""The options of ik_llama.cpp's llama-quantize that change types (examples/quantize/quantize.cpp of 55d3c05b):
--custom-q instead of --tensor-type, the per-kind options, --ignore-imatrix-rules."""

from __future__ import annotations

import re

from qpatch.errors import UsageError
from qpatch.predict.options import (
    LEAVE_OUTPUT_TENSOR,
    OUTPUT_TENSOR_TYPE,
    PURE,
    TOKEN_EMBEDDING_TYPE,
    Overrides,
    PerKind,
    Switch,
)

# the per-kind options, --attn-q-type ... (Options value "kind_types": ((name, type), ...))
KIND_OPTIONS = ("attn_q_type", "attn_k_type", "attn_v_type", "attn_qkv_type", "attn_output_type", "ffn_gate_type",
                "ffn_down_type", "ffn_up_type", "ffn_gate_inp_type")


def parse_custom_q(specs: list[str], catalogue, flag: str = "--custom-q") -> tuple:
    """`--custom-q REGEX=TYPE,...` as ik's parse_custom_quants reads it: split on ',', the pattern kept
    as written (case-sensitive), the type matched exactly against ggml_type_name."""
    out = []
    names = {catalogue.ggml_name(t): t for t in catalogue.types}
    for spec in specs:
        for item in spec.split(","):
            if "=" not in item:
                raise UsageError(f"Invalid custom quantization input {spec}")
            pat, _, typ = item.partition("=")
            if typ not in names:
                raise UsageError(f"Invalid quantization type '{typ}' in custom quantization input {item}",
                                 hint=f"ik_llama.cpp matches ggml type names exactly: {', '.join(sorted(names))}")
            try:
                re.compile(pat)
            except re.error as e:
                raise UsageError(f"{flag} '{item}': bad regex: {e}") from None
            out.append((pat, names[typ]))
    return tuple(out)


CUSTOM_Q = Overrides("custom_q", "--custom-q", "ik_llama.cpp's --custom-q", parse_specs=parse_custom_q, joined=True,
                     exact_type_names=True)
KIND_TYPES = PerKind("kind_types", "--{}", "ik_llama.cpp's per-kind options, e.g. attn-v-type=q8_0 for "
                     "--attn-v-type q8_0 (repeatable)", cli_flag="--kind-type", choices=KIND_OPTIONS)
IGNORE_IMATRIX_RULES = Switch("ignore_imatrix_rules", "--ignore-imatrix-rules",
                              "ik_llama.cpp's --ignore-imatrix-rules")

OPTIONS = (OUTPUT_TENSOR_TYPE, TOKEN_EMBEDDING_TYPE, CUSTOM_Q, PURE, LEAVE_OUTPUT_TENSOR, KIND_TYPES,
           IGNORE_IMATRIX_RULES)

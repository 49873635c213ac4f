"""The options of the current family's llama-quantize that change types (0c1e57098 tools/quantize/quantize.cpp):
b6700's and --prune-layers."""

from qpatch.predict.options import (
    LEAVE_OUTPUT_TENSOR,
    OUTPUT_TENSOR_TYPE,
    PRUNE_LAYERS,
    PURE,
    TENSOR_TYPE,
    TENSOR_TYPE_FILE,
    TOKEN_EMBEDDING_TYPE,
)

OPTIONS = (OUTPUT_TENSOR_TYPE, TOKEN_EMBEDDING_TYPE, TENSOR_TYPE, TENSOR_TYPE_FILE, PURE, LEAVE_OUTPUT_TENSOR,
           PRUNE_LAYERS)

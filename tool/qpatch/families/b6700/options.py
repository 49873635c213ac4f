"""The options of the b6700 family's llama-quantize that change types (4227c9be tools/quantize/quantize.cpp)."""

from qpatch.predict.options import (
    LEAVE_OUTPUT_TENSOR,
    OUTPUT_TENSOR_TYPE,
    PURE,
    TENSOR_TYPE,
    TENSOR_TYPE_FILE,
    TOKEN_EMBEDDING_TYPE,
)

OPTIONS = (OUTPUT_TENSOR_TYPE, TOKEN_EMBEDDING_TYPE, TENSOR_TYPE, TENSOR_TYPE_FILE, PURE, LEAVE_OUTPUT_TENSOR)

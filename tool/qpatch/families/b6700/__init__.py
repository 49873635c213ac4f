"""Pin family b6700: llama.cpp 4227c9be and tag b6700 (October 2025), one `llama_tensor_get_type`."""

"""Pin family current: llama.cpp 0c1e57098 (b11312, llama-cpp-python 0.3.36), category-based type choice."""

"""Pin family ik_llama: ik_llama.cpp (ik-llama-cpp-python 0.1.5 vendors commit 55d3c05b), its own type
choice in src/llama-quantize.cpp, its IQK, trellis and row-interleaved types, and --custom-q."""

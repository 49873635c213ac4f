"""qpatch: per-tensor quantization policies for llama.cpp, as Python rules rendered to C++."""

__version__ = "0.1.0"

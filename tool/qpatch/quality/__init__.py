"""Stage 10, quality: llama-perplexity runs on quantized models (perplexity.py, evaluation.py),
sweeps over policies and ftypes (sweep.py), their tables and plots (tables.py), and the content hashes
the caches are keyed by (content.py). The tiny real model they evaluate is written by gguf/tiny_model.py."""

"""Stage 10, quality: llama-perplexity runs on quantized models (perplexity.py, evaluation.py),
sweeps over policies and ftypes (sweep.py), their tables and plots (tables.py), and the tiny real
model the tests evaluate (tiny_model.py)."""

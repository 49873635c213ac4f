"""Stage 9, running: the real llama-quantize on a real GGUF with the applied policy (runner.py) and
the check that what it wrote is what the plan predicted (verify.py)."""

"""Stage 3, prediction: llama-quantize's options, the plan (every tensor's type, bytes and deciding
rule) and a policy's Python meaning (evaluate.py); the tables and JSON a plan is shown as (report.py).
A pin family's own order and stock model live in families/<name>/predict.py, which calls in here; the
family is passed in, never looked up by name."""

"""Stage 3, prediction, in one direction: `engine.plan` checks the policy against the pin, has the pin's
family walk the tensors (families/<name>/predict.py) and freezes the result into a `Plan` (plan.py).
Below the families: llama-quantize's options and their declarations (options.py), the plan's data
(plan.py) and a policy's Python meaning (rules.py), which the families' walks call. Beside them:
the tables and JSON a plan is shown as (report.py). The family is passed in, never looked up by name."""

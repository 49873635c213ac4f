"""Stage 12, measure and fit: what each tensor group costs in KL divergence at each shelved type, measured
with the pin's llama-perplexity on mixes linked from shelves, as jobs on a Dask cluster (table.py,
jobs.py); then the exact best choice of one type per group for a size budget, a multiple-choice knapsack
(fit.py), written as a policy file that the rest of qpatch plans, applies, exports and assembles
(policy_file.py)."""

"""Stock llama.cpp: no rule, stock's shape fallback, abort on a missing imatrix entry.

Applying it still installs the hook, so a build with `stock` applied must choose exactly
what the unpatched binary chooses (tests/test_policy_differential.py, test_current_policies.py and
test_ik_llama_family.py prove it on the zoo, one pin family each).
"""

from qpatch.policy.model import Policy

POLICY = Policy(
    name="stock",
    summary="llama.cpp's own choices, unchanged (the baseline every other policy is compared with)",
    rules=(),
)

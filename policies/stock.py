"""Stock llama.cpp: no rule, stock's shape fallback, abort on a missing imatrix entry.

Applying it still installs the hook, so a build with `stock` applied must choose exactly
what the unpatched binary chooses (tests/test_apply_build.py proves it on the zoo).
"""

from qpatch.policy.model import Policy

POLICY = Policy(
    name="stock",
    summary="llama.cpp's own choices, unchanged (the baseline every other policy is compared with)",
    rules=(),
)

"""Python predictions against what real binaries chose (../shared/reference/golden).

stock.json: stock llama-quantize built from 4227c9be; cc-moe.json: the CC-MoE replacement
llama-quant.cpp built on the same commit. The policies `stock` and `deepseek-v3` must match
every tensor of every case.
"""

import json

import pytest
from helpers.paths import GOLDEN

from qpatch import job

CASES = [("stock", "stock.json", k) for k in sorted(json.loads((GOLDEN / "stock.json").read_text()))]
CASES += [("deepseek-v3", "cc-moe.json", k) for k in sorted(json.loads((GOLDEN / "cc-moe.json").read_text()))]
_DATA = {}


def _expected(fname, key):
    if fname not in _DATA:
        _DATA[fname] = json.loads((GOLDEN / fname).read_text())
    return _DATA[fname][key]


@pytest.mark.parametrize("policy,fname,key", CASES, ids=[f"{p}:{k}" for p, _, k in CASES])
def test_prediction_matches_real_binary(policy, fname, key):
    expected = _expected(fname, key)
    model, ftype, im = key.split("|")
    p = job.make_plan(GOLDEN / f"{model}.gguf", ftype, policy=policy, pin="4227c9be",
                      imatrix=GOLDEN / f"{model}.imatrix.gguf" if im == "imatrix" else None)
    got = p.types()
    wrong = {n: (e, got.get(n), next(t.rule for t in p.tensors if t.name == n))
             for n, e in expected.items() if got.get(n) != e}
    assert not wrong, f"{policy} {key}: tensor: (expected, predicted, rule): {wrong}"
    assert set(got) == set(expected)
    assert not p.errors

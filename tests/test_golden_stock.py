"""The stock model against what the real stock llama-quantize (4227c9be) chose: ../shared golden data."""

import json
from pathlib import Path

import pytest

from qpatch import api

# The checkout (and CI's clone) has shared/ beside it.
GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "golden"
CASES = sorted(json.loads((GOLDEN / "stock.json").read_text()))


@pytest.mark.parametrize("key", CASES)
def test_stock_matches_golden(key):
    expected = json.loads((GOLDEN / "stock.json").read_text())[key]
    model, ftype, im = key.split("|")
    p = api.make_plan(GOLDEN / f"{model}.gguf", ftype,
                      imatrix=GOLDEN / f"{model}.imatrix.gguf" if im == "imatrix" else None)
    got = p.types()
    wrong = {n: (e, got.get(n)) for n, e in expected.items() if got.get(n) != e}
    assert not wrong, f"{key}: tensor: (expected, predicted): {wrong}"
    assert not p.errors

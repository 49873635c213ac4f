"""Export on the current family, proven on its real stock binary: stock `llama-quantize --dry-run`
(0c1e57098) given the exported `--tensor-type` list, or the exported `--tensor-type-file`, chooses
exactly the policy's type for every tensor (first-match semantics: the list replaces stock's mix and
its counters, and export adds overrides until no stock choice moves)."""

from __future__ import annotations

import pytest
from helpers import dry_run
from helpers.stock_binary import CURRENT_PIN as PIN

from qpatch import job
from qpatch.recipes import export as ex_mod

pytestmark = pytest.mark.binary

CASES = [
    ("deepseek-v3", "deepseek-v3-thin-61L", "IQ1_M"),
    ("deepseek-v3", "deepseek-v3-thin-61L", "Q4_K_M"),
    ("deepseek-v3", "deepseek2-kvb-12L", "IQ2_XXS"),
    ("deepseek-v3", "deepseek2-mla-10L", "Q3_K_M"),
    ("n-expert-fix", "qwen3moe-128e-24L", "Q3_K_M"),
    ("n-expert-fix", "deepseek2-kvb-12L", "Q4_K_S"),
    ("ffn-down-bump", "deepseek-v3-thin-61L", "IQ2_XS"),
]


@pytest.mark.parametrize("policy,model,ftype", CASES, ids=["-".join(c) for c in CASES])
def test_stock_binary_with_exported_list_chooses_the_policys_types(policy, model, ftype, zoo_files, current_quantize,
                                                                   tmp_path):
    path, imatrix = zoo_files[model]
    pp = job.make_plan(path, ftype, policy=policy, imatrix=imatrix, pin=PIN)
    ex = ex_mod.export(pp)
    assert ex.overrides and ex.complete, ex.inexpressible
    want = pp.types()
    args = [a for o in ex.overrides for a in ("--tensor-type", o.spec)]
    got = dry_run.run(current_quantize, path, ftype, imatrix=imatrix, args=args)
    assert got["returncode"] == 0, got["log_tail"]
    assert got["types"] == want, {n: (want[n], got["types"][n]) for n in want if got["types"].get(n) != want[n]}
    f = tmp_path / "types.txt"
    f.write_text(ex_mod.format_recipe(ex, "tensor-type-file"))
    got = dry_run.run(current_quantize, path, ftype, imatrix=imatrix, args=["--tensor-type-file", str(f)])
    assert got["returncode"] == 0 and got["types"] == want

"""Proof on the current family (0c1e57098): every shipped policy, compiled into a patched llama-quantize
through the pin's hook patch, chooses exactly what qpatch's Python prediction says, on every zoo model x
every ftype x imatrix on/off (through --dry-run: milliseconds a case, so every case runs in CI); and the
paths a dry run skips (a policy's Q8_0 for a missing imatrix entry, a tolerated wrong-length entry) in
real runs. One patched build, switched policy by policy (one translation unit recompiles).
"""

from __future__ import annotations

import pytest
from helpers import differential, dry_run, zoo
from helpers.stock_binary import CURRENT_PIN as PIN

from qpatch.families.pins import family_of

pytestmark = [pytest.mark.binary, pytest.mark.xdist_group("patched-current")]

POLICIES = ["stock", "n-expert-fix", "ffn-down-bump", "deepseek-v3"]
FTYPES = [f.name for f in family_of(PIN).catalogue.ftypes]


@pytest.mark.parametrize("policy", POLICIES)
def test_compiled_policy_equals_prediction_dry_run(policy, current_patched_build, zoo_files, real_layout_files):
    binary = current_patched_build.switch(policy)
    failures, n, changed = [], 0, 0
    models = [(path, imatrix) for _, (path, imatrix) in sorted(zoo_files.items())]
    models += [(path, None) for _, path in sorted(real_layout_files.items())]  # real size: no imatrix
    for path, imatrix in models:
        for ft in FTYPES:
            for im in (imatrix, None) if imatrix else (None,):
                n += 1
                try:
                    p = dry_run.check(binary, path, ft, pin=PIN, imatrix=im, policy=policy)
                    changed += any(t.rule.startswith("policies/") for t in p.tensors)
                except AssertionError as e:
                    failures.append(str(e))
    print(f"{policy}: {n} cases, {changed} where a policy rule decides a tensor")
    assert policy == "stock" or changed, "no case exercised the policy"
    assert not failures, f"{len(failures)} of {n} cases differ:\n" + "\n".join(failures[:5])


@pytest.mark.parametrize("policy,model,ftype,imatrix", [
    ("deepseek-v3", "deepseek2-mla-10L", "IQ1_M", ("skip", "blk.4.ffn_down_exps.weight")),  # no entry -> Q8_0
    ("deepseek-v3", "deepseek2-mla-10L", "IQ2_XXS", ("wrong", "blk.5.ffn_up_exps.weight")),  # tolerated -> Q8_0
    ("deepseek-v3", "deepseek2-kvb-12L", "IQ2_XXS", "none"),  # no imatrix at all: Q8_0 instead of aborting
    ("n-expert-fix", "qwen3moe-128e-24L", "Q4_K_M", "full"),
    ("ffn-down-bump", "deepseek-v3-thin-61L", "IQ2_XS", "full"),
])
def test_compiled_policy_real_runs(policy, model, ftype, imatrix, current_patched_build, zoo_files, tmp_path):
    binary = current_patched_build.switch(policy)
    path, _ = zoo_files[model]
    im = zoo.imatrix_for(model, imatrix, zoo_files, tmp_path)
    plan = differential.check(binary, path, ftype, tmp_path, imatrix=im, policy=policy, pin=PIN)
    assert not plan.errors
    if imatrix not in ("full", "none"):
        assert plan.types()[imatrix[1]] == "Q8_0", "the case no longer exercises the imatrix hook"


def test_compiled_deepseek_v3_reproduces_cc_moe(current_patched_build):
    """The CC-MoE golden data (made on 4227c9be) from the compiled policy on 0c1e57098: the mix is kept."""
    import json

    from helpers.paths import GOLDEN

    binary = current_patched_build.switch("deepseek-v3")
    golden = json.loads((GOLDEN / "cc-moe.json").read_text())
    failures = []
    for key, expected in sorted(golden.items()):
        model, ftype, im = key.split("|")
        plan = dry_run.check(binary, GOLDEN / f"{model}.gguf", ftype, pin=PIN, policy="deepseek-v3",
                             imatrix=GOLDEN / f"{model}.imatrix.gguf" if im == "imatrix" else None)
        got = plan.types()
        bad = {n: (e, got.get(n)) for n, e in expected.items() if got.get(n) != e}
        if bad:
            failures.append(f"{key}: (CC-MoE, ours): {bad}")
    assert len(golden) == 76 and not failures, "\n".join(failures[:10])

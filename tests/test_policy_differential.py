"""Proof: for every shipped policy, the compiled binary (hook + generated header, built from the
pinned source) chooses exactly what the Python prediction says, on every zoo model x every
ftype x imatrix on/off; and the compiled deepseek-v3 reproduces the original CC-MoE binary's
choices (../shared/reference/golden/cc-moe.json). One build, switched policy by policy.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import differential
from helpers.paths import GOLDEN

from qpatch import job
from qpatch.families.b6700.predict import NEEDS_IMATRIX
from qpatch.families.pins import family_of

PIN = "4227c9be"  # the b6700 family's real runs; the current family's proof is test_current_policies.py

POLICIES = ["stock", "n-expert-fix", "ffn-down-bump", "deepseek-v3"]
QUANTIZING = [f.name for f in family_of(PIN).catalogue.ftypes if f.quantizes]
SLOW = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M")  # grid set-up per process: schedule first


FULL = os.environ.get("QPATCH_FULL_PROOF") == "1"
# Always run in full: one model each policy targets and changes, one it leaves alone (dense llama).
ALWAYS = ("deepseek2-mla-10L", "llama-gqa4-16L")


def _cases(zoo_files, policy="stock"):
    """Every zoo model x ftype x imatrix on/off for `stock` (the hook must be transparent). For the
    other policies (QPATCH_FULL_PROOF=1 aside): every case in which the policy's prediction differs
    from stock's, and every case of the ALWAYS models. The cases left out are ones where the policy
    predicts stock's choices, which the stock run proves the hook delivers."""
    cases = []
    for model, (path, imatrix) in sorted(zoo_files.items()):
        for ft in QUANTIZING:
            for im in (imatrix, None) if ft not in NEEDS_IMATRIX else (imatrix,):
                if policy == "stock" or FULL or model in ALWAYS or _changes(policy, path, ft, im):
                    cases.append((model, path, ft, im))
    return sorted(cases, key=lambda c: (c[2] not in SLOW, c[0], c[2], c[3] is None))


def _changes(policy, path, ft, imatrix) -> bool:
    a = job.make_plan(path, ft, policy=policy, imatrix=imatrix, pin=PIN)
    b = job.make_plan(path, ft, policy="stock", imatrix=imatrix, pin=PIN)
    return a.types() != b.types() or a.errors != b.errors


def _run_all(binary, policy, cases, tmp_path, threads=2):
    def one(i_case):
        i, (model, path, ft, imatrix) = i_case
        out = tmp_path / f"c{i}"
        out.mkdir()
        try:
            differential.check(binary, path, ft, out, imatrix=imatrix, policy=policy, pin=PIN)
            return None
        except AssertionError as e:
            return f"{policy}: {e}"

    with ThreadPoolExecutor(threads) as ex:
        failures = [f for f in ex.map(one, enumerate(cases)) if f]
    return failures


@pytest.mark.binary
@pytest.mark.xdist_group("patched")
@pytest.mark.parametrize("policy", POLICIES)
def test_compiled_policy_equals_prediction(policy, patched_build, zoo_files, tmp_path):
    binary = patched_build.switch(policy)
    cases = _cases(zoo_files, policy)
    print(f"{policy}: {len(cases)} cases")
    failures = _run_all(binary, policy, cases, tmp_path)
    assert not failures, f"{len(failures)} of {len(cases)} cases differ:\n" + "\n".join(failures[:10])


@pytest.mark.binary
@pytest.mark.xdist_group("patched")
def test_compiled_deepseek_v3_reproduces_cc_moe(patched_build, tmp_path):
    import subprocess

    from gguf import GGUFReader

    from qpatch.gguf.catalogue import T

    binary = patched_build.switch("deepseek-v3")
    golden = json.loads((GOLDEN / "cc-moe.json").read_text())

    def one(item):
        i, (key, expected) = item
        model, ftype, im = key.split("|")
        out = tmp_path / f"g{i}.gguf"
        cmd = [str(binary), *(["--imatrix", str(GOLDEN / f"{model}.imatrix.gguf")] if im == "imatrix" else []),
               str(GOLDEN / f"{model}.gguf"), str(out), ftype, "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if r.returncode:
            return f"{key}: llama-quantize failed: {r.stderr[-300:]}"
        got = {t.name: T(int(t.tensor_type)).name for t in GGUFReader(out).tensors}
        out.unlink()
        bad = {n: (e, got.get(n)) for n, e in expected.items() if got.get(n) != e}
        return f"{key}: (CC-MoE, ours): {bad}" if bad else None

    with ThreadPoolExecutor(2) as ex:
        failures = [f for f in ex.map(one, enumerate(sorted(golden.items()))) if f]
    assert not failures, "\n".join(failures[:10])

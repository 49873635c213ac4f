"""`qpatch export` on real binaries: stock llama-quantize given the exported --tensor-type list writes
every tensor at the type the patched llama-quantize (policy applied) writes, except exactly the
tensors export reports as inexpressible.

The binaries are the session's shared builds (tests/conftest.py): the stock llama-quantize of the
pin, and the patched checkout switched to each policy (one translation unit rebuilt per switch).
Each IQ1/IQ2 llama-quantize run spends ~10 s building its grids, so the cases are few.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGUFReader
from helpers.zoo import EXPORT_ZOO
from test_export import PIN

from qpatch.families.pins import family_of
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import read_model
from qpatch.gguf.synth import write_imatrix, write_model
from qpatch.policy import loader
from qpatch.predict.engine import plan
from qpatch.predict.options import Options
from qpatch.quantize import runner
from qpatch.recipes import export as ex_mod

pytestmark = [pytest.mark.binary, pytest.mark.xdist_group("patched")]

SPECS = {s.name: s for s in EXPORT_ZOO}
SKIP_ENTRIES = ("blk.5.ffn_down_exps.weight", "blk.9.ffn_gate_exps.weight")

# (policy, model, ftype, imatrix): "full" = an entry for every matrix, "partial" = SKIP_ENTRIES left out
CASES = (
    ("deepseek-v3", "dsv3-mla", "IQ1_M", "full"),  # attn_k_b (rows of 128) inexpressible
    ("deepseek-v3", "dsv3-mla", "Q2_K", "full"),
    ("deepseek-v3", "dsv3-mla", "Q4_K_M", "full"),
    ("deepseek-v3", "dsv2-kvb", "IQ2_XXS", "partial"),  # no imatrix entry -> Q8_0, as an override
    ("n-expert-fix", "qwen3moe-128", "IQ2_XXS", "full"),
    ("n-expert-fix", "qwen3moe-128", "Q4_K_M", "full"),
    ("ffn-down-bump", "dsv3-mla", "IQ1_M", "full"),
)


@pytest.fixture(scope="session")
def stock_binary(stock_quantize) -> Path:
    return stock_quantize


@pytest.fixture(scope="session")
def patched_binary(patched_build):
    """policy name -> the shared patched build's llama-quantize, switched to that policy."""
    return patched_build.switch


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("export-binary")
    out = {}
    for spec in {SPECS[c[1]] for c in CASES}:
        out[spec.name, "model"] = write_model(spec, d / f"{spec.name}.gguf")
        out[spec.name, "full"] = write_imatrix(spec, d / f"{spec.name}.imatrix.gguf")
        out[spec.name, "partial"] = write_imatrix(spec, d / f"{spec.name}.partial.imatrix.gguf", skip=SKIP_ENTRIES)
    return out


def _types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


@pytest.mark.parametrize("policy,model_name,ftype,imatrix", CASES, ids=["-".join(c) for c in CASES])
def test_stock_with_exported_list_writes_what_the_patched_binary_writes(
        stock_binary, patched_binary, files, tmp_path, policy, model_name, ftype, imatrix):
    model, im = files[model_name, "model"], files[model_name, imatrix]
    pp = plan(read_model(model), loader.load(policy), Options(ftype=family_of(PIN).catalogue.parse_ftype(ftype),
                                                              imatrix=read_imatrix(im)), family_of(PIN), PIN)
    ex = ex_mod.export(pp)
    assert ex.overrides, "a round trip without overrides proves nothing"
    args = [a for o in ex.overrides for a in ("--tensor-type", o.spec)]

    runner.run(stock_binary, model, tmp_path / "stock.gguf", ftype, imatrix=im, extra_args=args, threads=1)
    runner.run(patched_binary(policy), model, tmp_path / "patched.gguf", ftype, imatrix=im, threads=1)
    stock, patched = _types(tmp_path / "stock.gguf"), _types(tmp_path / "patched.gguf")

    assert patched == pp.types(), "the patched binary does not write the policy's plan"
    differ = {n for n in patched if stock[n] != patched[n]}
    assert differ == {i.name for i in ex.inexpressible}
    for i in ex.inexpressible:
        assert (stock[i.name], patched[i.name]) == (i.stock_type.name, i.policy_type.name)
    if imatrix == "partial":
        assert {patched[n] for n in SKIP_ENTRIES} == {"Q8_0"}

"""`qpatch export` on real binaries: stock llama-quantize given the exported --tensor-type list writes
every tensor at the type the patched llama-quantize (policy applied) writes, except exactly the
tensors export reports as inexpressible.

The binaries. Until shared, cached build fixtures are on main, this module builds its own from
two llama.cpp trees of the pin named by environment variables, and skips when they are unset:
  QPATCH_TEST_STOCK_TREE    the pristine tree (its build-cpu llama-quantize is built if needed)
  QPATCH_TEST_PATCHED_TREE  the same with patches/<pin> applied; for each policy the generated
                            header is written and llama-quantize rebuilt (one translation unit),
                            the binary kept in the cache under the header's hash; the tree's own
                            header is put back (and rebuilt) at the end of the session.
Builds go through `qpatch.build` where that module exists, else `cmake --build` of a configured
build-cpu. Each IQ1/IQ2 llama-quantize run spends ~10 s building its grids, so the cases are few.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gguf import GGUFReader

from cachelock import file_lock

from qpatch import export as ex_mod
from qpatch import quantize, render
from qpatch.catalogue import parse_ftype
from qpatch.evaluate import Options, plan
from qpatch.imatrix import read_imatrix
from qpatch.model_facts import read_model
from qpatch.policy import loader
from qpatch.synth import write_imatrix, write_model
from test_export import ZOO

pytestmark = pytest.mark.binary

CACHE = Path(os.environ.get("QPATCH_CACHE", Path.home() / ".cache" / "qpatch")) / "test" / "export"
SPECS = {s.name: s for s in ZOO}
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


def _tree(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"set {var} to a llama.cpp tree of the pin (no shared build fixtures on this branch yet)")
    tree = Path(value)
    if not (tree / "src" / "llama-quant.cpp").is_file():
        pytest.fail(f"{var}={tree}: not a llama.cpp tree")
    return tree


def _build(tree: Path) -> Path:
    try:
        from qpatch import build
    except ImportError:
        build = None
    if build is not None:
        return Path(build.build(tree, "cpu", ["llama-quantize"], progress=None)) / "llama-quantize"
    bdir = tree / "build-cpu"
    if not (bdir / "CMakeCache.txt").is_file():
        pytest.skip(f"{tree}: no configured build-cpu, and qpatch.build is not on this branch")
    subprocess.run(["cmake", "--build", str(bdir), "--target", "llama-quantize", "--parallel", "2"], check=True,
                   capture_output=True)
    return bdir / "bin" / "llama-quantize"


@pytest.fixture(scope="session")
def stock_binary() -> Path:
    tree = _tree("QPATCH_TEST_STOCK_TREE")
    with file_lock(CACHE / "stock.lock"):
        return _build(tree)


@pytest.fixture(scope="session")
def patched_binary():
    """policy name -> a patched llama-quantize with that policy compiled in (cached by header hash)."""
    tree = _tree("QPATCH_TEST_PATCHED_TREE")
    if "llama-quant-qpatch.h" not in (tree / "src" / "llama-quant.cpp").read_text():
        pytest.fail(f"{tree}: the qpatch hook patch is not applied")
    header = tree / render.GENERATED_PATH
    original = header.read_text() if header.exists() else None
    touched = False

    def get(policy: str) -> Path:
        nonlocal touched
        text = render.render(loader.load(policy))
        out = CACHE / f"{policy}-{hashlib.sha256(text.encode()).hexdigest()[:16]}" / "llama-quantize"
        with file_lock(CACHE / "patched.lock"):
            if not out.is_file():
                touched |= render.write_if_changed(header, text)
                built = _build(tree)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(built, out)
        return out

    yield get
    if touched and original is not None:
        with file_lock(CACHE / "patched.lock"):
            if render.write_if_changed(header, original):
                _build(tree)


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
    pp = plan(read_model(model), loader.load(policy), Options(ftype=parse_ftype(ftype), imatrix=read_imatrix(im)))
    ex = ex_mod.export(pp)
    assert ex.overrides, "a round trip without overrides proves nothing"
    args = [a for o in ex.overrides for a in ("--tensor-type", o.spec)]

    quantize.run(stock_binary, model, tmp_path / "stock.gguf", ftype, imatrix=im, extra_args=args, threads=1,
                 progress=False)
    quantize.run(patched_binary(policy), model, tmp_path / "patched.gguf", ftype, imatrix=im, threads=1,
                 progress=False)
    stock, patched = _types(tmp_path / "stock.gguf"), _types(tmp_path / "patched.gguf")

    assert patched == pp.types(), "the patched binary does not write the policy's plan"
    differ = {n for n in patched if stock[n] != patched[n]}
    assert differ == {i.name for i in ex.inexpressible}
    for i in ex.inexpressible:
        assert (stock[i.name], patched[i.name]) == (i.stock_type.name, i.policy_type.name)
    if imatrix == "partial":
        assert {patched[n] for n in SKIP_ENTRIES} == {"Q8_0"}

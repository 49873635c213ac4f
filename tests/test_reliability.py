"""Reliability matrix items not covered elsewhere: each asserts the exact error and that nothing was lost."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from qpatch.cli import cli
from qpatch.codegen import render
from qpatch.errors import CheckoutError, QuantizeError, SourceError, VerifyMismatch


@pytest.fixture
def ds_model(zoo_files):
    return zoo_files["deepseek2-mla-10L"]


def test_imatrix_missing_for_a_very_low_bit_ftype(ds_model):
    model, _ = ds_model
    r = CliRunner().invoke(cli, ["plan", str(model), "--ftype", "IQ1_S", "--pin", "4227c9be"])
    assert r.exit_code == QuantizeError.exit_code
    assert "error: llama-quantize refuses IQ1_S without an importance matrix (pass --imatrix FILE)" in r.output


def _applied_checkout(checkout, tmp_path, case, binary_age=+5):
    """A real checkout (the test remote's 4227c9be) with a policy applied the way `qpatch apply` does it,
    and a stand-in llama-quantize in build-cpu/bin (never run: every case below is refused before)."""
    co = checkout.path
    policy = "deepseek-v3"
    if case == "stale header":  # a policy of the user's, changed after it was applied
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "mine.py").write_text(MINE)
        r = CliRunner().invoke(cli, ["--policies", str(mine), "apply", "mine", "--dir", str(co)])
        assert r.exit_code == 0, r.output
        (mine / "mine.py").write_text(MINE.replace("T.Q8_0", "T.Q6_K"))
        policy = "mine"
    elif case != "no policy":
        r = CliRunner().invoke(cli, ["apply", policy, "--dir", str(co)])
        assert r.exit_code == 0, r.output
    header = co / render.GENERATED_PATH
    binary = co / "build-cpu" / "bin" / "llama-quantize"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 99\n")
    binary.chmod(0o755)
    t = header.stat().st_mtime if header.exists() else time.time()
    os.utime(binary, (t + binary_age, t + binary_age))
    return co, header, policy


MINE = """from qpatch.gguf.catalogue import T
from qpatch.policy.model import Policy, rule

POLICY = Policy(name="mine", summary="attn_k_b to Q8_0", rules=(rule("attn_k_b", T.Q8_0),))
"""


@pytest.mark.parametrize("case,args,code,message", [
    ("wrong policy", ["--policy", "stock"], QuantizeError.exit_code,
     "error: the checkout has policy 'deepseek-v3' applied, not 'stock'"),
    ("old binary", [], QuantizeError.exit_code, "is older than the generated policy code llama-quant-qpatch.h"),
    ("stale header", [], QuantizeError.exit_code, "is stale: policy 'mine' changed since it was applied"),
    ("edited header", [], CheckoutError.exit_code,
     "llama-quant-qpatch.h was changed after `qpatch apply deepseek-v3`: it is not what the checkout records"),
    ("no policy", [], CheckoutError.exit_code, "no policy applied"),
])
def test_quantize_refuses_what_it_cannot_trust(checkout, tmp_path, ds_model, case, args, code, message):
    """What was applied is read from the checkout's own record (apply's commit), never from the header's text."""
    model, imatrix = ds_model
    co, header, _ = _applied_checkout(checkout, tmp_path, case, binary_age=-5 if case == "old binary" else +5)
    if case == "edited header":
        header.write_text(header.read_text().replace("return GGML_TYPE_Q4_K;", "return GGML_TYPE_Q5_K;", 1))
    before = {p: p.read_bytes() for p in co.rglob("*") if p.is_file() and ".git" not in p.parts}
    out = tmp_path / "out.gguf"
    r = CliRunner().invoke(cli, ["quantize", str(model), str(out), "--ftype", "IQ1_M", "--imatrix", str(imatrix),
                                 "--dir", str(co), *args])
    assert r.exit_code == code, r.output
    assert message in r.output
    if case in ("wrong policy", "old binary"):  # hints act on this checkout, not the project's llama.cpp/
        assert f"--dir {co}" in r.output and "make build-cpu" not in r.output
    assert not out.exists()
    assert {p: p.read_bytes() for p in co.rglob("*") if p.is_file() and ".git" not in p.parts} == before


@pytest.mark.binary
def test_verify_against_the_wrong_policy(ds_model, stock_quantize, tmp_path):
    model, imatrix = ds_model
    out = tmp_path / "q.gguf"
    subprocess.run([str(stock_quantize), "--imatrix", str(imatrix), str(model), str(out), "IQ2_XXS", "1"],
                   check=True, capture_output=True)
    ok = CliRunner().invoke(cli, ["verify", str(out), "--policy", "stock", "--source", str(model)])
    assert ok.exit_code == 0 and "OK: every tensor has the predicted type" in ok.output
    bad = CliRunner().invoke(cli, ["verify", str(out), "--policy", "deepseek-v3", "--source", str(model)])
    assert bad.exit_code == VerifyMismatch.exit_code
    assert "tensor" in bad.output and "expected" in bad.output and "deciding rule" in bad.output
    assert "policies/deepseek_v3.py:" in bad.output and "MISMATCH:" in bad.output


def test_offline_with_no_usable_source(tmp_path, monkeypatch):
    # an empty cache, PyPI unreachable (a closed local port) and GitHub unreachable (no network here)
    monkeypatch.setenv("QPATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    t0 = time.monotonic()
    r = CliRunner().invoke(cli, ["fetch", "--dir", str(tmp_path / "llama.cpp")])
    assert r.exit_code == SourceError.exit_code, r.output
    assert "sdist" in r.output and "git" in r.output
    assert not (tmp_path / "llama.cpp").exists()
    assert time.monotonic() - t0 < 120


"""Proof of the ik_llama family (pin ik-55d3c05b) against ik_llama.cpp's real llama-quantize.

ik's `--dry-run` runs type choice, the imatrix lookup and the very-low-bit checks, then only sizes
each tensor: on the zoo's thin models (real row lengths, two rows, two stored experts) it is the fast
oracle, for the stock binary (every zoo model x every one of the 82 ftypes x imatrix on/off, and the
options that change types) and for each shipped policy compiled in. Real runs prove what a dry run
skips (quantizing a row that does not fit), that dry and real runs agree, and `verify` on files with
ik types; the export proof runs the stock binary with the exported --custom-q string.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers import ik_llama_dry_run, real_layouts, zoo
from helpers.ik_llama_build import BUILDS, IK_PIN

from qpatch import job
from qpatch.errors import PolicyError
from qpatch.families.pins import family_of
from qpatch.gguf.catalogue import T, decode_type, load_catalogue
from qpatch.gguf.header import read_header
from qpatch.gguf.synth import Spec, write_imatrix, write_model
from qpatch.policy import loader
from qpatch.quantize.verify import report, verify
from qpatch.recipes import export as ex_mod

FAMILY = family_of(IK_PIN)
FTYPES = [f.name for f in FAMILY.catalogue.ftypes if not f.copy]
# Row-interleaved types need ne[1] % 4 (or 8, 16) == 0 or they become the plain type: 16 rows reach both.
IK_SPECS = (Spec("llama-gqa4-rows16-16L", "llama", 16, n_head=8, n_head_kv=2, rows=16),
            Spec("qwen3moe-rows8-24L", "qwen3moe", 24, n_head=8, n_head_kv=2, head_dim=64, n_expert=128,
                 n_expert_used=8, rows=8))


@pytest.fixture(scope="session")
def ik_zoo(tmp_path_factory):
    """The zoo (and two models with more rows), each with a legacy .dat imatrix: the format ik reads."""
    d = tmp_path_factory.mktemp("ik-zoo")
    out = {}
    for s in zoo.ZOO + IK_SPECS:
        model, im = d / f"{s.name}.gguf", d / f"{s.name}.imatrix.dat"
        write_model(s, model)
        write_imatrix(s, im, legacy=True)
        out[s.name] = (model, im)
    return out


@pytest.fixture(scope="session")
def ik_stock():
    return BUILDS.stock()


# ------------------------------------------------------------------ no binary


def test_type_ids_are_the_familys_own():
    ik = load_catalogue("ik_llama")
    assert ik.ggml_id(T.IQ4_KS) == 144 and ik.ggml_id(T.IQ4_KS_R4) == 344 and ik.ggml_id(T.Q4_K) == 12
    # id 41 is Q1_0 on mainline; ik's Q1_0_G128 (also 41) has no sizes in its gguf-py, so no qpatch type
    assert decode_type(41) == T.Q1_0 and decode_type(144) == T.IQ4_KS
    with pytest.raises(KeyError):
        decode_type(41, "ik_llama")
    assert ik.ggml_name(T.Q4_K) == "q4_K" and ik.ggml_name(T.IQ4_KS_R4) == "iq4_ks_r4"


def test_ik_type_sizes_count_row_metadata():
    from qpatch.gguf.catalogue import row_bytes

    # ggml_row_size: IQ4_KS keeps a 4-byte scale per row before its 136-byte blocks
    assert row_bytes(T.IQ4_KS, 7168) == 4 + 28 * 136
    assert row_bytes(T.Q4_K, 7168) == 28 * 144


def test_policy_naming_ik_types_is_an_error_on_mainline(ik_zoo):
    path, _ = ik_zoo["deepseek-v3-thin-61L"]
    with pytest.raises(PolicyError, match=r"deepseek_v3_ik\.py:\d+: names ggml type IQ4_K, which pin 0c1e57098"):
        job.make_plan(path, "Q4_K_M", policy="deepseek-v3-ik", pin="0c1e57098")


def test_n_expert_fix_keeps_stock_on_ik(ik_zoo):
    path, im = ik_zoo["qwen3moe-128e-24L"]
    fix = job.make_plan(path, "Q3_K_M", policy="n-expert-fix", pin=IK_PIN, imatrix=im)
    stock = job.make_plan(path, "Q3_K_M", policy="stock", pin=IK_PIN, imatrix=im)
    assert fix.types() == stock.types()
    assert "keeps stock's choices" in fix.warnings[0]


def test_custom_q_is_read_like_ik():
    cat = FAMILY.catalogue
    assert FAMILY.overrides.parse([r"blk\.1\.ATTN=q4_K,ffn_down=iq4_ks_r4"], cat) == (
        (r"blk\.1\.ATTN", T.Q4_K), ("ffn_down", T.IQ4_KS_R4))  # the pattern keeps its case
    with pytest.raises(Exception, match="Invalid quantization type 'q4_k'"):
        FAMILY.overrides.parse(["attn=q4_k"], cat)  # ggml_type_name is q4_K: ik compares exactly
    assert FAMILY.overrides.spell(["a=q8_0", "b=q4_K"]) == ["--custom-q", "a=q8_0,b=q4_K"]


def test_import_an_ik_recipe_round_trips(ik_zoo, tmp_path):
    """`qpatch import --custom-q` on the ik pin: read as ik reads it; no fix-ups (--custom-q comes after stock's
    chain, whose counters still advance), and the policy plans exactly as stock given the string."""
    from click.testing import CliRunner

    from qpatch.cli import cli

    path, im = ik_zoo["deepseek-v3-thin-61L"]
    recipe = r"attn_k_b=q8_0,ffn_down_exps=iq3_k,blk\.[0-2]\.ffn_down=iq6_k"
    r = CliRunner().invoke(cli, ["import", "ikr", "--model", str(path), "-f", "IQ2_KS", "--imatrix", str(im),
                                 "--pin", IK_PIN, "--custom-q", recipe, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "3 rule(s), 0 of them fix-ups" in r.stdout
    assert "--custom-q ffn_down_exps=iq3_k" in (tmp_path / "ikr.py").read_text()
    effect = job.make_plan(path, "IQ2_KS", imatrix=im, pin=IK_PIN, custom_q=[recipe])
    loader.use_policies_dir(tmp_path)
    try:
        assert job.make_plan(path, "IQ2_KS", imatrix=im, pin=IK_PIN, policy="ikr").types() == effect.types()
    finally:
        loader.use_policies_dir(None)


# ------------------------------------------------------------------ the stock binary


def _assert_dry_runs_agree(binary, path, ftypes, imatrices, policy="stock"):
    """Every (ftype, imatrix) case through ik_llama_dry_run.check; one assertion listing the first failures."""
    failures, n = [], 0
    for ft in ftypes:
        for im in imatrices:
            n += 1
            try:
                ik_llama_dry_run.check(binary, path, ft, pin=IK_PIN, imatrix=im, policy=policy)
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, f"{path.name}: {len(failures)} of {n} cases differ:\n" + "\n".join(failures[:5])


@pytest.mark.binary
@pytest.mark.parametrize("model", [m.name for m in zoo.ZOO + IK_SPECS])
def test_every_ftype_dry_run(model, ik_zoo, ik_stock):
    path, imatrix = ik_zoo[model]
    _assert_dry_runs_agree(ik_stock, path, FTYPES, (imatrix, None))


# The seven real layouts (real names, real ne[0], real hyper-parameters), cut to 16 rows and 2 stored experts
# since ik's dry run reads the data: every ftype, with a legacy imatrix and without (Gemma 4's 60 blocks of
# per-layer tensors take 0.7 s a case: with the imatrix only).
@pytest.mark.binary
@pytest.mark.parametrize("layout", list(real_layouts.LAYOUTS))
def test_real_layout_every_ftype_dry_run(layout, ik_stock, tmp_path):
    im = tmp_path / "imatrix.dat"
    path = real_layouts.write_thin(layout, tmp_path / "model.gguf", imatrix=im)
    _assert_dry_runs_agree(ik_stock, path, FTYPES, (im,) if layout.startswith("gemma") else (im, None))


# (id, model, ftype, imatrix?, llama-quantize options, plan keyword arguments, outcome meant)
OPTIONS = [
    ("pure", "llama-gqa4-16L", "IQ4_KS", False, ["--pure"], {"pure": True}, "ok"),
    ("pure-falls-back", "llama-rows288-12L", "IQ4_K", False, ["--pure"], {"pure": True}, "ok"),
    ("output-and-embd-types", "llama-gqa4-16L", "IQ3_K", False,
     ["--output-tensor-type", "q8_0", "--token-embedding-type", "iq4_k_r4"],
     {"output_tensor_type": "q8_0", "token_embedding_type": "iq4_k_r4"}, "ok"),
    ("output-type-tied", "llama-tied-7L", "Q3_K_M", False, ["--output-tensor-type", "iq5_k"],
     {"output_tensor_type": "iq5_k"}, "ok"),
    # first match wins, after stock's choice (whose counters still advance), before the fallback
    ("custom-q-first-wins", "llama-gqa4-16L", "Q3_K_M", False,
     ["--custom-q", r"attn_v=q8_0,attn_=iq5_ks,blk\.[0-3]\.ffn_up=iq4_nl"],
     {"custom_q": [r"attn_v=q8_0,attn_=iq5_ks,blk\.[0-3]\.ffn_up=iq4_nl"]}, "ok"),
    ("custom-q-then-fallback", "llama-rows288-12L", "IQ4_K", False, ["--custom-q", "ffn_down=iq6_k,output=q4_0"],
     {"custom_q": ["ffn_down=iq6_k,output=q4_0"]}, "ok"),
    ("custom-q-case-sensitive", "llama-gqa4-16L", "IQ4_KS", False, ["--custom-q", "ATTN_V=q8_0,attn_k=q6_K"],
     {"custom_q": ["ATTN_V=q8_0,attn_k=q6_K"]}, "ok"),
    ("custom-q-interleaved", "llama-gqa4-rows16-16L", "IQ4_KS", False,
     ["--custom-q", "ffn_down=iq4_k_r4,token_embd=q8_0_r8,attn_v=q8_KV_r8"],
     {"custom_q": ["ffn_down=iq4_k_r4,token_embd=q8_0_r8,attn_v=q8_KV_r8"]}, "ok"),
    ("custom-q-dsv3", "deepseek-v3-thin-61L", "IQ2_K", True,
     ["--custom-q", r"attn_k_b=q8_0,ffn_down_exps=iq3_k,shexp=iq5_ks,blk\.[0-2]\.=iq6_k"],
     {"custom_q": [r"attn_k_b=q8_0,ffn_down_exps=iq3_k,shexp=iq5_ks,blk\.[0-2]\.=iq6_k"]}, "ok"),
    ("kind-options", "qwen3moe-128e-24L", "IQ4_KS", False,
     ["--attn-v-type", "q8_0", "--attn-k-type", "q6_K", "--ffn-down-type", "iq5_k", "--ffn-gate-type", "iq3_k",
      "--ffn-up-type", "iq3_ks", "--attn-output-type", "q5_K", "--attn-q-type", "iq4_k"],
     {"kind_types": {"attn_v_type": "q8_0", "attn_k_type": "q6_K", "ffn_down_type": "iq5_k",
                     "ffn_gate_type": "iq3_k", "ffn_up_type": "iq3_ks", "attn_output_type": "q5_K",
                     "attn_q_type": "iq4_k"}}, "ok"),
    ("ffn-down-type-iq1_s_r4", "deepseek-v3-thin-61L", "IQ1_S_R4", True, ["--ffn-down-type", "iq2_k_r4"],
     {"kind_types": {"ffn_down_type": "iq2_k_r4"}}, "ok"),
    # the router: quantized only when asked for, and through the ffn_gate branch (its counter advances)
    ("ffn-gate-inp-type", "qwen3moe-128e-24L", "IQ3_KS", False, ["--ffn-gate-inp-type", "q8_0"],
     {"kind_types": {"ffn_gate_inp_type": "q8_0"}}, "ok"),
    ("ignore-imatrix-rules", "llama-moe8-gqa2-13L", "IQ2_XXS", False, ["--ignore-imatrix-rules"],
     {"ignore_imatrix_rules": True}, "ok"),
    ("leave-output", "llama-gqa4-16L", "IQ4_K", False, ["--leave-output-tensor"], {"leave_output_tensor": True}, "ok"),
    ("very-low-bit-without-imatrix", "llama-moe8-gqa2-13L", "IQ2_KT", False, [], {}, "fails"),
    ("refused-ftype-without-imatrix", "llama-rows288-12L", "IQ1_M_R4", False, [], {}, "fails"),
    ("mla-head-sizes-refused", "deepseek2-mla-10L", "Q4_K_M", False, [], {}, "fails"),
]

_FLAG_KW = {"--output-tensor-type": "output_tensor_type", "--token-embedding-type": "token_embedding_type"}


@pytest.mark.binary
@pytest.mark.parametrize("model,ftype,with_imatrix,args,kwargs,meant", [pytest.param(*c[1:], id=c[0]) for c in OPTIONS])
def test_options_dry_run(model, ftype, with_imatrix, args, kwargs, meant, ik_zoo, ik_stock):
    path, imatrix = ik_zoo[model]
    plan = ik_llama_dry_run.check(ik_stock, path, ftype, pin=IK_PIN, imatrix=imatrix if with_imatrix else None,
                            args=args, plan_kwargs=kwargs)
    assert ("fails" if plan.errors else "ok") == meant, f"case no longer tests what it was written for: {plan.errors}"


def _real_run(binary, model, ftype, out, *, imatrix=None, args=()):
    cmd = [str(binary), *args, *(["--imatrix", str(imatrix)] if imatrix else []), str(model), str(out), ftype, "2"]
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)


# (id, model, ftype, imatrix?, options): real runs, read back tensor by tensor
REAL = [
    ("iq2_ks-dsv3", "deepseek-v3-thin-61L", "IQ2_KS", True, []),
    ("iq4_k_r4-interleaved", "llama-gqa4-rows16-16L", "IQ4_K_R4", False, []),
    ("iq3_kt-moe", "qwen3moe-rows8-24L", "IQ3_KT", True, []),
    ("q4_k_m-custom-q", "llama-gqa4-16L", "Q4_K_M", False, ["--custom-q", "attn_v=iq6_k,ffn_down=iq4_ks"]),
]


@pytest.mark.binary
@pytest.mark.parametrize("model,ftype,with_imatrix,args", [pytest.param(*c[1:], id=c[0]) for c in REAL])
def test_real_runs_agree_and_verify(model, ftype, with_imatrix, args, ik_zoo, ik_stock, tmp_path):
    path, imatrix = ik_zoo[model]
    im = imatrix if with_imatrix else None
    out = tmp_path / "q.gguf"
    r = _real_run(ik_stock, path, ftype, out, imatrix=im, args=args)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    kw = {"custom_q": [args[1]]} if args else {}
    plan = job.make_plan(path, ftype, imatrix=im, pin=IK_PIN, **kw)
    h = read_header(out, "ik_llama")
    got = {t.name: t.type.name for t in h.tensors}
    assert got == plan.types()
    # the file's size is what the plan's sizes (with ik's per-row metadata) add up to
    data = out.stat().st_size - h.data_offset
    assert abs(data - plan.total_bytes) <= 32 * len(plan.tensors)
    res = verify(out, policy="stock", source=path, ftype=ftype, imatrix=im, pin=IK_PIN, **kw)
    assert res.ok, report(res)


@pytest.mark.binary
def test_a_row_that_fits_no_block_is_written_anyway(ik_zoo, ik_stock, tmp_path):
    """Q4_0 on rows of 200 has no fallback in ik, and ik does not refuse it: dry and real runs write Q4_0
    (a file no ggml can load), which the plan predicts, with a warning instead of an error."""
    path, _ = ik_zoo["llama-rows200-10L"]
    plan = job.make_plan(path, "Q4_0", pin=IK_PIN)
    assert not plan.errors and any("will not load" in w for w in plan.warnings)
    out = tmp_path / "q.gguf"
    assert _real_run(ik_stock, path, "Q4_0", out).returncode == 0
    assert {t.name: t.type.name for t in read_header(out, "ik_llama").tensors} == plan.types()


# ------------------------------------------------------------------ the patched binary, every shipped policy

POLICY_FTYPES = ("IQ1_S_R4", "IQ2_KT", "IQ2_XXS", "IQ2_KS", "IQ2_M_R4", "IQ2_K", "IQ3_KS", "IQ3_K", "Q3_K_M",
                 "IQ4_KS", "IQ4_K", "Q4_K_M", "IQ5_KS", "Q6_K", "Q8_0")
POLICY_MODELS = ("deepseek-v3-thin-61L", "deepseek2-kvb-12L", "qwen3moe-128e-24L", "llama-moe8-gqa2-13L",
                 "llama-gqa4-16L", "llama-rows288-12L")


@pytest.mark.binary
@pytest.mark.xdist_group("patched-ik")
@pytest.mark.parametrize("policy", ["stock", "n-expert-fix", "ffn-down-bump", "deepseek-v3", "deepseek-v3-ik"])
def test_policy_compiled_in_agrees(policy, ik_zoo, ik_stock):
    binary = BUILDS.switch(policy)  # fails on any compiler warning in the hook or the generated header
    pol = loader.load(policy)
    for model in POLICY_MODELS:
        path, imatrix = ik_zoo[model]
        _assert_dry_runs_agree(binary, path, POLICY_FTYPES, (imatrix, None), policy=pol)


EXPORTS = [
    ("deepseek-v3-ik", "deepseek-v3-thin-61L", "IQ2_KS"),
    ("deepseek-v3-ik", "deepseek-v3-thin-61L", "IQ3_K"),
    ("deepseek-v3-ik", "deepseek2-kvb-12L", "IQ4_KS"),
    ("deepseek-v3", "deepseek-v3-thin-61L", "Q4_K_M"),
    ("ffn-down-bump", "deepseek-v3-thin-61L", "IQ2_KS"),
]


@pytest.mark.binary
@pytest.mark.xdist_group("patched-ik")
@pytest.mark.parametrize("policy,model,ftype", EXPORTS, ids=["-".join(c) for c in EXPORTS])
def test_stock_binary_with_exported_custom_q_chooses_what_the_patched_one_does(policy, model, ftype, ik_zoo,
                                                                               ik_stock):
    path, imatrix = ik_zoo[model]
    pp = job.make_plan(path, ftype, policy=policy, imatrix=imatrix, pin=IK_PIN)
    ex = ex_mod.export(pp)
    assert ex.overrides and ex.complete, ex.inexpressible
    text = ex_mod.format_recipe(ex, "custom-q")
    custom_q = text.strip().splitlines()[-1]
    stock = ik_llama_dry_run.run(ik_stock, path, ftype, imatrix=imatrix, args=["--custom-q", custom_q])
    patched = ik_llama_dry_run.run(BUILDS.switch(policy), path, ftype, imatrix=imatrix)
    assert stock["returncode"] == 0 and patched["returncode"] == 0, stock["log_tail"] + patched["log_tail"]
    assert stock["types"] == patched["types"] == pp.types()


@pytest.mark.binary
@pytest.mark.xdist_group("patched-ik")
def test_qpatch_quantize_and_verify_with_ik_types(ik_zoo, ik_stock, tmp_path):
    """The user's path on the ik pin: the checkout with deepseek-v3-ik applied, `qpatch quantize` (which
    plans, runs the patched llama-quantize and verifies tensor by tensor), with a --custom-q rule (which beats
    the policy) and a per-kind option, then `qpatch verify` on the file (policy and pin read back from it)."""
    from click.testing import CliRunner

    from qpatch.cli import cli

    BUILDS.switch("deepseek-v3-ik")
    path, imatrix = ik_zoo["deepseek-v3-thin-61L"]
    out = tmp_path / "dsv3-IQ2_KS.gguf"
    opts = ["--custom-q", "ffn_down_exps=iq4_k", "--kind-type", "ffn-gate-inp-type=q8_0"]
    r = CliRunner().invoke(cli, ["quantize", str(path), str(out), "-f", "IQ2_KS", "--imatrix", str(imatrix),
                                 "--dir", str(BUILDS.path), "--threads", "2", *opts])
    assert r.exit_code == 0, r.output
    assert "OK: every tensor has the predicted type" in r.output, r.output
    types = {t.name: t.type for t in read_header(out, "ik_llama").tensors}
    assert {T.IQ5_KS, T.IQ4_KS, T.IQ3_KS, T.IQ2_KS, T.IQ6_K} <= set(types.values())
    assert types["blk.10.ffn_down_exps.weight"] == T.IQ4_K and types["blk.10.ffn_gate_inp.weight"] == T.Q8_0
    r = CliRunner().invoke(cli, ["verify", str(out), "--source", str(path), "--imatrix", str(imatrix), *opts])
    assert r.exit_code == 0, r.output
    assert "OK: every tensor has the predicted type" in r.output, r.output

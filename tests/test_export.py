"""`qpatch export`: the exported overrides, run through the Python model of stock llama-quantize,
give every tensor the policy's type, except exactly the tensors reported as inexpressible.

The list is read back from the rendered `tensor-type-file` text the way llama-quantize reads
`--tensor-type` (split at the first '=', pattern lowercased), so what is proven is the output.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner
from helpers.zoo import BY_NAME, EXPORT_ZOO, write_zoo
from hypothesis import given, settings
from hypothesis import strategies as st

from qpatch.cli import cli
from qpatch.errors import QuantizeError
from qpatch.families.b6700.predict import is_quantizable
from qpatch.families.pins import family_of
from qpatch.gguf.catalogue import T
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import read_model
from qpatch.gguf.synth import write_imatrix
from qpatch.policy import loader
from qpatch.predict.engine import plan as plan_on
from qpatch.predict.options import Options, parse_tensor_type
from qpatch.recipes import export as ex_mod
from qpatch.recipes import patterns

PIN = "4227c9be"  # these proofs run through the b6700 family's Python model (see test_export_binary.py)
CAT = family_of(PIN).catalogue


def plan(model, policy, opts):
    return plan_on(model, policy, opts, family_of(PIN), PIN)


POLICIES = ("n-expert-fix", "ffn-down-bump", "deepseek-v3")
QUANTIZING = tuple(f.name for f in CAT.ftypes if f.quantizes)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    files = write_zoo(tmp_path_factory.mktemp("export-zoo"), EXPORT_ZOO)
    return {s.name: (s, read_model(files[s.name][0]), read_imatrix(files[s.name][1])) for s in EXPORT_ZOO}


@pytest.fixture(scope="session")
def policies():
    return {name: loader.load(name) for name in POLICIES}


def read_back(text: str) -> tuple[tuple[str, T], ...]:
    """PAT=type lines of the tensor-type-file format, parsed as llama-quantize parses --tensor-type."""
    return tuple(parse_tensor_type(line, CAT) for line in text.splitlines() if line and not line.startswith("#"))


def reachable(pp, base) -> dict[str, T]:
    """Tensors --tensor-type can set (type choice ran, stock did not fall back) -> the policy's type."""
    o = pp.options
    return {p.name: p.type for p, s in zip(pp.tensors, base.tensors)
            if o.ftype.quantizes and is_quantizable(p.name, len(p.shape), o) and not s.fell_back}


def assert_equivalent(pp) -> ex_mod.Export:
    """Export pp and prove the exported text against the stock model, independently of export's own check."""
    ex = ex_mod.export(pp)
    tensor_types = read_back(ex_mod.format_recipe(ex, "tensor-type-file"))
    assert tensor_types == ex.tensor_types
    stock = plan(pp.model, loader.stock(), dataclasses.replace(pp.options, overrides=tensor_types))
    lost = {i.name for i in ex.inexpressible}
    wrong = [(p.name, p.type.name, s.type.name) for p, s in zip(pp.tensors, stock.tensors)
             if p.type != s.type and p.name not in lost]
    assert not wrong, f"stock + exported list differs from the policy: {wrong}"
    aborts = {e.partition(": ")[0] for e in stock.errors}
    assert aborts <= lost, f"stock would abort on {aborts - lost}: {stock.errors}"

    # exactly the tensors that cannot be had: stock fell back where the policy wants another type,
    # or stock aborts where the patched binary does not
    base = plan(pp.model, loader.stock(), pp.options)
    fell = {p.name for p, s in zip(pp.tensors, base.tensors) if s.fell_back and p.type != s.type}
    assert lost == fell | aborts

    # anchored, survive lowercasing and --custom-q's comma split, and never touch a tensor the
    # policy wants at another type: no two patterns of different types match one tensor, so order is moot
    reach = reachable(pp, base)
    for pat, typ in tensor_types:
        assert pat.startswith("^") and pat.endswith("$") and pat == pat.lower() and "," not in pat
        hit = {n: t for n, t in reach.items() if re.search(pat, n)}
        assert hit and all(t == typ for t in hit.values()), (pat, typ, hit)
    flipped = plan(pp.model, loader.stock(), dataclasses.replace(pp.options, overrides=tensor_types[::-1]))
    assert flipped.types() == stock.types()
    return ex


def options(ftype: str, imatrix) -> Options:
    return Options(ftype=CAT.parse_ftype(ftype), imatrix=imatrix)


@pytest.mark.parametrize("with_imatrix", (True, False), ids=("imatrix", "none"))
@pytest.mark.parametrize("ftype", QUANTIZING)
@pytest.mark.parametrize("model_name", [s.name for s in EXPORT_ZOO])
@pytest.mark.parametrize("policy", POLICIES)
def test_export_equivalent(zoo, policies, policy, model_name, ftype, with_imatrix):
    _, model, im = zoo[model_name]
    pp = plan(model, policies[policy], options(ftype, im if with_imatrix else None))
    if pp.errors:  # the patched binary itself would refuse: nothing to export
        with pytest.raises(QuantizeError):
            ex_mod.export(pp)
        return
    assert_equivalent(pp)


def test_no_two_overrides_of_one_type_could_share_a_pattern(zoo, policies):
    """The count is minimal for the pattern shape: merging any two same-type block overrides into one
    rectangle (union of kinds x union of blocks) would hit a tensor the policy wants at another type."""
    checked = 0
    for name in ("dsv3-mla", "dsv2-kvb", "qwen3moe-128"):
        _, model, im = zoo[name]
        for ftype in ("IQ1_M", "IQ2_XXS", "Q2_K", "Q4_K_M", "IQ3_M"):
            pp = plan(model, policies["deepseek-v3" if name.startswith("ds") else "n-expert-fix"], options(ftype, im))
            ex = ex_mod.export(pp)
            reach = reachable(pp, ex.stock)
            blk = [o for o in ex.overrides if o.pattern.startswith(r"^blk\.")]
            for i, a in enumerate(blk):
                for b in blk[i + 1:]:
                    if a.type != b.type:
                        continue
                    cells = [re.match(r"blk\.(\d+)\.(.+)\.weight", n).groups() for n in a.sets + b.sets]
                    blocks = {int(c[0]) for c in cells}
                    kinds = {c[1] for c in cells}
                    clash = [n for n, t in reach.items()
                             if t != a.type and (m := re.match(r"blk\.(\d+)\.(.+)\.weight$", n))
                             and int(m.group(1)) in blocks and m.group(2) in kinds]
                    assert clash, f"{a.spec} and {b.spec} could be one pattern"
                    checked += 1
    assert checked > 0


def test_deepseek_v3_iq1_m(zoo, policies):
    """The CC-MoE mix on a DeepSeek-like model: MLA's attn_k_b (rows of 128) is the one thing a stock
    binary cannot be told: stock falls back to IQ4_NL and skips overrides; the policy falls back to Q8_0."""
    _, model, im = zoo["dsv3-mla"]
    ex = assert_equivalent(plan(model, policies["deepseek-v3"], options("IQ1_M", im)))
    assert {i.name for i in ex.inexpressible} == {f"blk.{b}.attn_k_b.weight" for b in range(24)}
    assert {(i.policy_type, i.stock_type) for i in ex.inexpressible} == {(T.Q8_0, T.IQ4_NL)}
    specs = [o.spec for o in ex.overrides]
    # kinds merge where their block sets agree (ffn_gate/ffn_up exist in the dense block 0 only)
    assert r"^blk\.\d+\.(attn_kv_a_mqa|attn_q_a|ffn_gate|ffn_up)\.weight$=q4_k" in specs
    assert r"^blk\.([3-9]|1\d|2[01])\.ffn_(gate|up)_exps\.weight$=iq1_s" in specs  # the middle, one step down
    assert r"^blk\.([12]|2[23])\.ffn_(down|gate|up)_exps\.weight$=iq2_xxs" in specs  # the edges, one step up
    assert len(ex.overrides) == 9


def test_merges_blocks_and_kinds(zoo, policies):
    _, model, im = zoo["qwen3moe-128"]
    ex = assert_equivalent(plan(model, policies["n-expert-fix"], options("Q4_K_M", im)))
    assert [o.spec for o in ex.overrides] == [r"^blk\.\d+\.attn_(k|v)\.weight$=q8_0",
                                              r"^blk\.\d+\.attn_output\.weight$=q5_k"]


def test_ffn_down_bump_fills_in_the_blocks_stock_s_counter_skips(zoo, policies):
    """24 blocks, n/8 = 3: stock's counter reaches 3 after blk.0.ffn_down, blk.1.ffn_down_exps and
    blk.1.ffn_down_shexp, so block 2 misses the bump that the policy gives it."""
    _, model, im = zoo["dsv3-mla"]
    ex = assert_equivalent(plan(model, policies["ffn-down-bump"], options("IQ1_M", im)))
    assert [o.spec for o in ex.overrides] == [r"^blk\.2\.ffn_down_(exps|shexp)\.weight$=q2_k"]


def test_stock_policy_and_unaffected_models_export_nothing(zoo, policies):
    _, model, im = zoo["llama-moe8"]  # exactly 8 experts: n-expert-fix changes nothing
    assert assert_equivalent(plan(model, policies["n-expert-fix"], options("Q3_K_M", im))).overrides == ()
    _, model, im = zoo["llama-gqa"]  # deepseek-v3 targets deepseek2 only
    assert assert_equivalent(plan(model, policies["deepseek-v3"], options("IQ1_M", im))).overrides == ()


def test_missing_imatrix_entry_becomes_a_q8_0_override(zoo, policies, tmp_path):
    """deepseek-v3 quantizes a very-low-bit tensor without an imatrix entry to Q8_0 instead of aborting.
    Q8_0 needs no imatrix and fits the row, so an override to Q8_0 is exactly equivalent."""
    spec, model, _ = zoo["dsv3-mla"]
    skip = ("blk.5.ffn_down_exps.weight", "blk.9.ffn_gate_exps.weight")
    im = read_imatrix(write_imatrix(spec, tmp_path / "skip.imatrix.gguf", skip=skip))
    pp = plan(model, policies["deepseek-v3"], options("IQ2_XXS", im))
    assert all(pp.types()[n] == "Q8_0" for n in skip)
    ex = assert_equivalent(pp)
    assert not set(skip) & {i.name for i in ex.inexpressible}
    assert any(o.type == T.Q8_0 and set(o.sets) & set(skip) for o in ex.overrides)
    # without any imatrix at IQ2_M, every IQ2_S/IQ2_XXS choice becomes Q8_0: still expressible
    assert_equivalent(plan(model, policies["deepseek-v3"], options("IQ2_M", None)))


def test_imatrix_length_mismatch_is_inexpressible(zoo, policies, tmp_path):
    """deepseek-v3 ignores an imatrix entry of the wrong length; stock aborts on it whatever the list says."""
    spec, model, _ = zoo["dsv3-mla"]
    im = read_imatrix(write_imatrix(spec, tmp_path / "wrong.imatrix.gguf", wrong_length=("blk.6.attn_output.weight",)))
    ex = assert_equivalent(plan(model, policies["deepseek-v3"], options("IQ2_XXS", im)))
    lost = {i.name: i for i in ex.inexpressible}
    assert "aborts" in lost["blk.6.attn_output.weight"].reason


def test_policy_job_that_fails_is_refused(zoo, policies):
    _, model, _ = zoo["dsv3-mla"]
    with pytest.raises(QuantizeError, match="without an importance matrix"):
        ex_mod.export(plan(model, policies["deepseek-v3"], options("IQ1_M", None)))


# ---------------------------------------------------------------------------- regexes


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 130), st.one_of(st.none(), st.integers(0, 130)))
def test_range_regex(lo, span):
    hi = None if span is None else lo + span
    rx = re.compile("^(" + "|".join(patterns.range_pattern(lo, hi)) + ")$")
    for x in range(0, 400):
        assert bool(rx.match(str(x))) == (lo <= x and (hi is None or x <= hi)), (lo, hi, x)


@settings(max_examples=400, deadline=None)
@given(st.sets(st.integers(0, 120), min_size=1, max_size=20), st.sets(st.integers(0, 120), max_size=40))
def test_block_regex_covers_need_avoids_bad(need, bad):
    bad -= need
    b = patterns.blocks_pattern(need, bad)
    rx = re.compile(rf"^blk\.{b}\.k$")
    assert all(rx.match(f"blk.{x}.k") for x in need), b
    assert not any(rx.match(f"blk.{x}.k") for x in bad), b
    assert "," not in b and b == b.lower()


def test_literals_survive_lowercasing():
    for word in ("blk.0.Attn_K.weight", "output.weight", "a+b(c)"):
        pat = ("^" + patterns._lit(word) + "$").lower()
        assert re.match(pat, word) and not re.match(pat, word.lower() + "x")
    assert patterns.alternation(["ffn_gate_exps", "ffn_up_exps"]) == "ffn_(gate|up)_exps"
    assert patterns.alternation(["output.weight", "token_embd.weight"]) == r"(output|token_embd)\.weight"


# -------------------------------------------------------------------------------- CLI


def test_cli_formats_and_exit_codes(zoo, tmp_path):
    m, im = write_zoo(tmp_path, [BY_NAME["dsv3-mla"]])["dsv3-mla"]
    run = CliRunner().invoke
    args = ["export", "deepseek-v3", str(m), "-f", "IQ1_M", "--imatrix", str(im), "--pin", PIN]

    r = run(cli, args)
    assert r.exit_code == 9 and r.stdout == ""
    assert "blk.[0-23].attn_k_b: policy q8_0, stock iq4_nl" in r.stderr and "--allow-partial" in r.stderr

    outs = {}
    for fmt in ("tensor-type", "tensor-type-file", "custom-q"):  # the lists (model-card: test_recipe_import.py)
        r = run(cli, args + ["--allow-partial", "--format", fmt])
        assert r.exit_code == 0, r.output
        assert r.stdout == run(cli, args + ["--allow-partial", "--format", fmt]).stdout  # deterministic
        outs[fmt] = r.stdout.splitlines()
        # stdout is exactly what llama-quantize (or the shell) reads: the header goes to stderr in every format
        assert "# 9 overrides setting" in r.stderr and "# PARTIAL: 24 tensor(s)" in r.stderr
        assert not any(ln.startswith("#") for ln in r.stdout.splitlines())
    specs = outs["tensor-type-file"]
    assert outs["tensor-type"] == [f"--tensor-type '{s}' \\" for s in specs]
    assert outs["custom-q"] == [",".join(specs)]

    r = run(cli, ["export", "n-expert-fix", str(m), "-f", "Q4_K_M", "--pin", PIN])
    assert r.exit_code == 0 and "# 1 override setting 24 tensors" in r.stderr
    r = run(cli, ["export", "deepseek-v3", str(m), "-f", "IQ1_M", "--pin", PIN])
    assert r.exit_code == QuantizeError.exit_code and "importance matrix" in r.stderr

"""Findings of a new user's trial (issue "Policy authoring and the CLI, hardened"): each test failed before its fix."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from qpatch.cli import cli
from qpatch.errors import CheckoutError, PolicyError, QuantizeError
from qpatch.policy import loader

HEADER = "from qpatch.policy.model import *  # T and the rule vocabulary\n\n"


@pytest.fixture
def pdir(tmp_path, monkeypatch):
    d = tmp_path / "policies"
    d.mkdir()
    monkeypatch.setenv("QPATCH_POLICIES", str(d))
    return d


def test_compare_honours_format_json(zoo_files):
    model, im = zoo_files["deepseek2-mla-10L"]
    r = CliRunner().invoke(cli, ["plan", str(model), "-f", "IQ2_XXS", "--imatrix", str(im), "--policy", "deepseek-v3",
                                 "--compare", "stock", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["base"]["policy"] == "stock" and data["plan"]["policy"] == "deepseek-v3"
    assert data["changes"] and all(c["from"] != c["to"] for c in data["changes"])


def test_compare_lists_the_errors_it_counts(zoo_files):
    model, _ = zoo_files["llama-moe8-gqa2-13L"]
    r = CliRunner().invoke(cli, ["plan", str(model), "-f", "IQ1_M", "--policy", "n-expert-fix", "--compare", "stock"])
    assert r.exit_code == QuantizeError.exit_code
    listed = [ln for ln in r.stdout.splitlines() if ln.startswith("error: ")]
    # one line per distinct message, its tensors grouped: "...: N tensors: blk.[0-12].ffn_up_exps.weight, ..."
    counted = sum(int(m.group(1)) if (m := re.search(r": (\d+) tensors: ", ln)) else 1 for ln in listed)
    assert listed and f"({counted} problem(s) listed above)" in r.stderr
    assert len(listed) < counted  # collapsed, not one line per tensor


def test_a_frame_passed_as_denominator_is_refused_at_load_with_file_and_line(pdir):
    (pdir / "badframe.py").write_text(HEADER + "R = rule('ffn_down', T.Q4_K, Before(3, Ordinal()))\n"
                                      "POLICY = Policy('badframe', 'x', (R,))\n")
    with pytest.raises(PolicyError, match=r"badframe\.py:3: Before\(3, Ordinal.*num and den must be integers"):
        loader.load("badframe")
    r = CliRunner().invoke(cli, ["render", "badframe"])
    assert r.exit_code == PolicyError.exit_code and r.stdout == ""


def test_list_shows_good_policies_beside_a_broken_one(pdir):
    (pdir / "good.py").write_text(HEADER + "POLICY = Policy('good', 'fine', ())\n")
    (pdir / "broken.py").write_text(HEADER + "R = rule('attn_k', T.Q4_KK)\n")
    r = CliRunner().invoke(cli, ["list"])
    assert r.exit_code == PolicyError.exit_code
    assert "good" in r.stdout and "fine" in r.stdout
    assert "BROKEN: " in r.stdout and "broken.py:3: AttributeError: Q4_KK" in r.stdout


def test_show_prints_conditions_as_they_evaluate():
    """AnyOf inside a rule's conditions prints as one parenthesised group: "A and (X or Y)"."""
    import re

    pol = loader.load("deepseek-v3")
    with_or = [r.describe_when() for r in pol.rules if " or " in r.describe_when()]
    assert with_or
    for text in with_or:
        # every " or " sits inside a parenthesised group that holds no " and "
        assert re.fullmatch(r"(?:[^()]|\((?:(?! and )[^()])* or (?:(?! and )[^()])*\))*", text), text
        assert "k < N/8 [ordinal in own kind] or k > 7N/8 [ordinal in own kind])" in text


def test_fetch_notices_a_modified_working_tree(checkout, upstream):
    quant = checkout.path / "src" / "llama-quant.cpp"
    quant.write_text(quant.read_text() + "\n// mine\n")
    with pytest.raises(CheckoutError, match="uncommitted changes to src/llama-quant.cpp"):
        checkout.fetch(upstream.pin("4227c9be"), source=f"mirror:{upstream.path}")
    assert quant.read_text().endswith("// mine\n")  # nothing lost


def test_errors_are_collapsed_by_message_over_block_ranges():
    from qpatch.predict.report import collapse_errors

    errs = [f"blk.{i}.ffn_up_exps.weight: missing importance matrix for a very low-bit type (IQ1_S)"
            for i in range(3, 61)]
    errs += ["output.weight: row length 100 is not a multiple of 256", "GGML_ASSERT n_attention_wv is unexpected: 3"]
    errs += [f"blk.{i}.attn_k_b.weight: missing importance matrix for a very low-bit type (IQ1_S)"
             for i in (0, 1, 2, 5)]
    assert collapse_errors(errs) == [
        "missing importance matrix for a very low-bit type (IQ1_S): 62 tensors: blk.[3-60].ffn_up_exps.weight, "
        "blk.[0-2,5].attn_k_b.weight",
        "output.weight: row length 100 is not a multiple of 256",
        "GGML_ASSERT n_attention_wv is unexpected: 3",
    ]
    many = [f"blk.0.t{i}.weight: message {i}" for i in range(20)]
    out = collapse_errors(many, limit=5)
    assert out[:5] == [f"blk.0.t{i}.weight: message {i}" for i in range(5)]
    assert out[5] == "... and 15 more (--format json lists every error)"


MY_MIX = '''"""my-mix: n-expert-fix plus Q6_K attn_output (a user's policy, outside qpatch)."""
from qpatch_policies.n_expert_fix import RULES as NEF
from qpatch.policy.model import Policy, rule
from qpatch.gguf.catalogue import T

POLICY = Policy(name="my-mix", summary="n-expert-fix, attn_output q6_k", rules=(rule("attn_output", T.Q6_K),) + NEF)
'''


def test_policies_outside_qpatch_are_found_and_their_hash_does_not_depend_on_where(tmp_path, monkeypatch):
    from qpatch.codegen import render

    for where in ("a", "b/c"):
        (tmp_path / where / "mine").mkdir(parents=True)
        (tmp_path / where / "mine" / "my_mix.py").write_text(MY_MIX)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["--policies", str(tmp_path / "a" / "mine"), "list"])
    assert r.exit_code == 0 and f"n-expert-fix, attn_output q6_k [{tmp_path / 'a' / 'mine'}]" in r.stdout
    assert "deepseek-v3" in r.stdout  # the shipped ones stay on the path
    assert CliRunner().invoke(cli, ["list"]).stdout.count("my-mix") == 0  # --policies lasts one invocation
    loaded = []
    for where in ("a", "b/c"):
        loader.use_policies_dir(tmp_path / where / "mine")
        try:
            loaded.append(loader.load("my-mix"))
        finally:
            loader.use_policies_dir(None)
    a, b = loaded
    assert a.source == b.source == "mine/my_mix.py" and a.content_hash == b.content_hash
    assert render.render(a, "0c1e57098") == render.render(b, "0c1e57098")  # same C++, so `check` agrees
    assert a.rules[0].source == "mine/my_mix.py:6" and a.rules[1].source.startswith("policies/n_expert_fix.py:")
    (tmp_path / "policies").mkdir()  # ./policies in the working directory is searched without a flag
    (tmp_path / "policies" / "my_mix.py").write_text(MY_MIX)
    assert loader.load("my-mix").directory == str((tmp_path / "policies").resolve())
    r = CliRunner().invoke(cli, ["--policies", str(tmp_path / "nope"), "list"])
    assert r.exit_code == 4 and "no such directory" in r.stderr


def test_apply_records_where_the_policy_was_found(checkout, tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my_mix.py").write_text(MY_MIX)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["--policies", str(tmp_path / "mine"), "apply", "my-mix", "--dir", str(checkout.path)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["check", "--dir", str(checkout.path)])  # no --policies: the recorded directory
    assert r.exit_code == 0 and "up to date with policy my-mix" in r.stdout, r.output


def test_step_has_a_default_ladder_and_says_when_it_cannot_step(pdir, zoo_files):
    (pdir / "stepper.py").write_text(HEADER + "POLICY = Policy('stepper', 'x', (rule('ffn_down_exps', Step(1)),))\n")
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = CliRunner().invoke(cli, ["plan", str(model), "-f", "Q2_K", "--policy", "stepper", "--format", "json"])
    exps = [t for t in json.loads(r.stdout)["tensors"] if "ffn_down_exps" in t["name"]]
    assert exps and all(t["type"] == "Q3_K" for t in exps)  # stock's Q3_K is not on LADDER: kept, and said
    assert all(t["rule"].endswith("(Step: stock's Q3_K is off the ladder, kept)") for t in exps)
    r = CliRunner().invoke(cli, ["plan", str(model), "-f", "Q4_K_M", "--policy", "stepper", "--format", "json"])
    assert {t["type"] for t in json.loads(r.stdout)["tensors"] if "ffn_down_exps" in t["name"]} <= {"Q5_K", "Q8_0"}
    (pdir / "badstep.py").write_text(HEADER + "R = rule('ffn_down', Step(1.5))\n"
                                     "POLICY = Policy('badstep', 'x', (R,))\n")
    with pytest.raises(PolicyError, match=r"badstep\.py:3: Step\(1\.5\): the number of steps must be an integer"):
        loader.load("badstep")


def test_plan_warns_about_rules_and_imatrices_that_do_not_fit(pdir, zoo_files):
    (pdir / "typo.py").write_text(HEADER + "POLICY = Policy('typo', 'x', (rule('attn_kvb', T.Q8_0), "
                                  "rule('ffn_down_exps', T.Q4_K)))\n")
    model, _ = zoo_files["deepseek2-mla-10L"]
    _, other_im = zoo_files["llama-moe8-gqa2-13L"]
    r = CliRunner().invoke(cli, ["plan", str(model), "-f", "Q4_K_M", "--policy", "typo", "--imatrix", str(other_im)])
    text = r.stdout.replace("\n    ", " ")  # wrapped to 120 columns: continuation lines are indented
    warnings = [ln for ln in text.splitlines() if ln.startswith("warning: ")]
    assert warnings[0] == "warning: policies/typo.py:3: 'attn_kvb' is no tensor kind llama.cpp knows (a typo?)"
    assert re.match(r"warning: the imatrix has no entry for \d+ and an entry of another length for \d+ of the \d+ "
                    r"tensors quantized .*: is it this model's\?", warnings[1])
    assert len(warnings) == 2  # ffn_down_exps exists: no warning for it
    qwen, _ = zoo_files["qwen3moe-128e-24L"]
    r = CliRunner().invoke(cli, ["plan", str(qwen), "-f", "Q4_K_M", "--policy", "deepseek-v3", "--format", "json"])
    assert json.loads(r.stdout)["warnings"] == [
        "policy deepseek-v3 is for deepseek2; this model is qwen3moe: it changes nothing here"]
    (pdir / "mla.py").write_text(HEADER + "POLICY = Policy('mla', 'x', (rule('attn_k_b', T.Q8_0), "
                                 "rule('attn_v_b', T.Q6_K)))\n")
    r = CliRunner().invoke(cli, ["plan", str(qwen), "-f", "Q4_K_M", "--policy", "mla", "--format", "json"])
    assert json.loads(r.stdout)["warnings"] == ["none of policy mla's 2 rule(s) selects a tensor of this model"]
    r = CliRunner().invoke(cli, ["plan", str(model), "-f", "Q4_K_M", "--policy", "n-expert-fix", "--format", "json"])
    assert json.loads(r.stdout)["warnings"] == []  # a policy for every architecture: rules for others stay quiet


def test_synth_overwrites_and_creates_nothing_unless_told(tmp_path):
    out = tmp_path / "new" / "m.gguf"
    r = CliRunner().invoke(cli, ["synth", "llama-gqa", str(out)])
    assert r.exit_code == 2 and "does not exist" in r.stderr and "--mkdir" in r.stderr and not out.parent.exists()
    assert CliRunner().invoke(cli, ["synth", "llama-gqa", str(out), "--mkdir"]).exit_code == 0
    before = out.read_bytes()
    r = CliRunner().invoke(cli, ["synth", "qwen3-moe", str(out)])
    assert r.exit_code == 2 and "exists" in r.stderr and "--force" in r.stderr and out.read_bytes() == before
    assert CliRunner().invoke(cli, ["synth", "qwen3-moe", str(out), "--force"]).exit_code == 0
    assert out.read_bytes() != before

"""qpatch import: recipes as policies, each round trip proven against qpatch's model of stock llama-quantize
(the binary proofs of that model are test_current_differential.py; a real quantized GGUF's import is in
test_quality_binary.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from qpatch.cli import cli

DS = "deepseek2-mla-10L"


def _plan(model, im, policy, ftype="IQ2_XXS", pdir=None):
    args = (["--policies", str(pdir)] if pdir else []) + ["plan", str(model), "-f", ftype, "--imatrix", str(im),
                                                           "--policy", policy, "--format", "json"]
    r = CliRunner().invoke(cli, args)
    return {t["name"]: t["type"] for t in json.loads(r.stdout)["tensors"]}


def test_an_exported_recipe_imports_back_to_the_policy_it_came_from(zoo_files, tmp_path):
    """deepseek-v3 -> `qpatch export` (a --tensor-type-file a stock binary takes) -> `qpatch import` -> the same
    plan."""
    model, im = zoo_files[DS]
    r = CliRunner().invoke(cli, ["export", "deepseek-v3", str(model), "-f", "IQ2_XXS", "--imatrix", str(im),
                                 "--format", "tensor-type-file"])
    assert r.exit_code == 0, r.output
    (tmp_path / "recipe.txt").write_text(r.stdout)
    out = tmp_path / "mine"
    r = CliRunner().invoke(cli, ["import", "from-export", "--model", str(model), "-f", "IQ2_XXS", "--imatrix", str(im),
                                 "--tensor-type-file", str(tmp_path / "recipe.txt"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    n = len(r.stdout.split("\n")[0].split(": ")[1].split())
    assert "0 of them fix-ups" in r.stdout and "round trip: the policy gives all" in r.stdout and n
    src = (out / "from_export.py").read_text()
    assert src.count("  # --tensor-type ") == len([ln for ln in (tmp_path / "recipe.txt").read_text().split() if ln])
    assert _plan(model, im, "from-export", pdir=out) == _plan(model, im, "deepseek-v3")


def test_custom_q_and_a_fix_up_for_stock_counters(zoo_files, tmp_path):
    """On 0c1e57098 an override skips stock's ffn_down counter, so stock bumps another tensor under the recipe
    than without it: the import adds a rule for that tensor, says why, and the round trip holds."""
    model, im = zoo_files[DS]
    out = tmp_path / "p"
    r = CliRunner().invoke(cli, ["import", "counter", "--model", str(model), "-f", "IQ2_XXS", "--imatrix", str(im),
                                 "--custom-q", r"blk\.0\.ffn_down=q8_0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "2 rule(s), 1 of them fix-ups" in r.stdout
    src = (out / "counter.py").read_text()
    assert "# fix-up: under the recipe stock chooses this here (an override skips stock's counters)" in src
    effect = CliRunner().invoke(cli, ["plan", str(model), "-f", "IQ2_XXS", "--imatrix", str(im), "--tensor-type",
                                      r"blk\.0\.ffn_down=q8_0", "--format", "json"])
    want = {t["name"]: t["type"] for t in json.loads(effect.stdout)["tensors"]}
    assert _plan(model, im, "counter", pdir=out) == want


def test_import_refuses_what_it_cannot_do(zoo_files, tmp_path):
    model, im = zoo_files[DS]
    base = ["import", "x", "--model", str(model), "-f", "Q4_K_M", "--out", str(tmp_path)]
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 2 and "give one recipe" in r.stderr
    r = CliRunner().invoke(cli, base + ["--custom-q", "ffn_down_exps=iq4_ks"])  # an ik_llama.cpp type
    assert r.exit_code == 2 and "unknown ggml type" in r.stderr and "iq4_ks" in r.stderr
    r = CliRunner().invoke(cli, ["import", "Bad_Name", "--model", str(model), "-f", "Q4_K_M", "--tensor-type", "a=q8_0",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 2 and "lower-case words" in r.stderr
    assert CliRunner().invoke(cli, base + ["--tensor-type", "attn_k_b=q8_0"]).exit_code == 0
    r = CliRunner().invoke(cli, base + ["--tensor-type", "attn_k_b=q8_0"])
    assert r.exit_code == 2 and "exists" in r.stderr and "--force" in r.stderr
    r = CliRunner().invoke(cli, ["import", "y", "-f", "Q4_K_M", "--tensor-type", "a=q8_0", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "needs --model" in r.stderr


@pytest.mark.parametrize("spec", ["0-2,5", "7"])
def test_in_blocks_reads_as_its_list(spec):
    import re

    from qpatch.policy.blocks import in_blocks

    pat = in_blocks("ffn_down_exps", spec).pattern
    hits = [b for b in range(0, 70) if re.search(pat, f"blk.{b}.ffn_down_exps.weight")]
    assert hits == ([0, 1, 2, 5] if spec == "0-2,5" else [7])
    assert not re.search(pat, "blk.0.ffn_down_exps_x.weight") and not re.search(pat, "blk.0.ffn_down.weight")


def test_model_card_is_the_command_what_each_override_sets_and_the_sizes(zoo_files):
    model, im = zoo_files[DS]
    r = CliRunner().invoke(cli, ["export", "deepseek-v3", str(model), "-f", "IQ2_XXS", "--imatrix", str(im),
                                 "--format", "model-card"])
    assert r.exit_code == 0, r.output
    card = r.stdout
    plan = json.loads(CliRunner().invoke(cli, ["plan", str(model), "-f", "IQ2_XXS", "--imatrix", str(im), "--policy",
                                               "deepseek-v3", "--format", "json"]).stdout)
    listed = CliRunner().invoke(cli, ["export", "deepseek-v3", str(model), "-f", "IQ2_XXS", "--imatrix", str(im),
                                      "--format", "tensor-type-file"]).stdout.split()
    assert card.startswith("### Quantization: IQ2_XXS, ") and f"{plan['bpw']:.3f} bpw" in card.splitlines()[0]
    assert [ln.strip().removeprefix("--tensor-type '").removesuffix("' \\") for ln in card.splitlines()
            if ln.strip().startswith("--tensor-type")] == listed  # the same overrides, in the same order
    rows = [ln for ln in card.splitlines() if ln.startswith("| `^blk")]
    assert len(rows) == len(listed) and all(ln.count(" | ") == 1 for ln in rows)  # pipes in patterns escaped
    assert "| **total** |" in card and f"| {len(plan['tensors'])} |" in card

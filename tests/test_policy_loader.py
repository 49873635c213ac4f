"""Loading policies by name: errors name the file and line."""

import pytest
from click.testing import CliRunner

from qpatch.cli import cli
from qpatch.errors import PolicyError
from qpatch.policy import loader


@pytest.fixture
def pdir(tmp_path, monkeypatch):
    monkeypatch.setenv("QPATCH_POLICIES", str(tmp_path))
    return tmp_path


HEADER = "from gguf import GGMLQuantizationType as T\nfrom qpatch.policy.model import Policy, rule\n"


def test_unknown_policy_lists_known_ones():
    with pytest.raises(PolicyError, match="unknown policy 'nope'") as e:
        loader.load("nope")
    assert "deepseek-v3" in e.value.hint


def test_syntax_error_names_file_and_line(pdir):
    (pdir / "broken.py").write_text(HEADER + "POLICY = Policy(name='broken',\n  summary='x' rules=())\n")
    with pytest.raises(PolicyError, match=r"broken\.py:4: SyntaxError"):
        loader.load("broken")


def test_unknown_type_name_names_file_and_line(pdir):
    (pdir / "typo.py").write_text(HEADER + "R = rule('attn_k', T.Q4_KK)\nPOLICY = Policy('typo', 'x', (R,))\n")
    with pytest.raises(PolicyError, match=r"typo\.py:3: AttributeError: .*Q4_KK"):
        loader.load("typo")


def test_unknown_ftype_names_the_rule_line(pdir):
    (pdir / "badft.py").write_text(
        HEADER + "from qpatch.policy.model import Ftypes\n"
        "R = rule('attn_k', T.Q4_K, Ftypes(('Q4_K_XL',)))\nPOLICY = Policy('badft', 'x', (R,))\n")
    with pytest.raises(PolicyError, match=r"badft\.py:4: unknown ftype 'Q4_K_XL'"):
        loader.load("badft")


def test_cli_unknown_policy_exit_code(tmp_path):
    from qpatch.gguf.synth import Spec, write_model

    m = write_model(Spec("m", "llama", 2), tmp_path / "m.gguf")
    r = CliRunner().invoke(cli, ["plan", str(m), "--ftype", "Q4_K_M", "--policy", "nope"])
    assert r.exit_code == PolicyError.exit_code
    assert "error: unknown policy 'nope'" in r.output


def test_policies_compose_from_shared_rules():
    nef = loader.load("n-expert-fix")
    ds = loader.load("deepseek-v3")
    shared = [r for r in ds.rules if r.source.startswith("policies/n_expert_fix.py")]
    assert shared and all(r in nef.rules for r in shared)

"""Clear messages and the documented exit codes (errors.py) for what users get wrong."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import zoo

from qpatch.cli import cli
from qpatch.errors import ModelError, PolicyError, UsageError
from qpatch.gguf.synth import Spec, write_model, write_sparse_split

SMALL = zoo.BY_NAME["llama-tied-7L"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(SMALL, tmp_path_factory.mktemp("m") / "m.gguf")


def plan(*args):
    return CliRunner().invoke(cli, ["plan", *map(str, args)])


def test_unknown_ftype(model):
    r = plan(model, "--ftype", "Q9_K")
    assert r.exit_code == UsageError.exit_code
    assert "unknown ftype 'Q9_K'" in r.output and "Q4_K_M" in r.output  # names what is accepted


def test_unknown_policy(model):
    r = plan(model, "--ftype", "Q4_K_M", "--policy", "no-such-policy")
    assert r.exit_code == PolicyError.exit_code
    assert "unknown policy 'no-such-policy'" in r.output and "stock" in r.output


def test_not_gguf(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_text("this is not a model\n")
    r = plan(p, "--ftype", "Q4_K_M")
    assert r.exit_code == ModelError.exit_code
    assert "not a GGUF file" in r.output


@pytest.mark.parametrize("keep,message", [(100, "truncated GGUF header"), (0.5, "truncated GGUF file")])
def test_truncated(model, tmp_path, keep, message):
    data = model.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    r = plan(p, "--ftype", "Q4_K_M")
    assert r.exit_code == ModelError.exit_code
    assert message in r.output


@pytest.fixture()
def split(tmp_path):
    return write_sparse_split(Spec("s", "llama", 4), tmp_path / "s", 3)


def test_split_reads_as_one_model(split):
    r = plan(split[0], "--ftype", "Q4_K_M", "--format", "json")
    assert r.exit_code == 0, r.output


def test_split_missing_shard(split):
    split[1].unlink()
    r = plan(split[0], "--ftype", "Q4_K_M")
    assert r.exit_code == ModelError.exit_code
    assert "missing shard 2 of 3" in r.output and split[1].name in r.output


def test_split_not_first_shard(split):
    r = plan(split[1], "--ftype", "Q4_K_M")
    assert r.exit_code == ModelError.exit_code
    assert "shard 2 of 3, not the first shard" in r.output and "s-00001-of-00003.gguf" in r.output

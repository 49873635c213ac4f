"""A new pin family is one folder and a pin (issue 19): a toy family, added to a copy of the package in a
temporary folder, plans, renders and exports with no other file of qpatch touched. Its one new option
(`--keep-output`) reaches the command line, the plan, the plan's header and llama-quantize's arguments
from its declaration alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OPTIONS = '''
"""The toy binary's options: mainline's --tensor-type and --pure, and one of its own."""
from qpatch.predict.options import PURE, TENSOR_TYPE, Switch

KEEP_OUTPUT = Switch("keep_output", "--keep-output", "the toy's own: output.weight stays Q8_0")
OPTIONS = (TENSOR_TYPE, PURE, KEEP_OUTPUT)
'''

PREDICT = '''
"""A toy llama-quantize: every 2-D weight gets the ftype's default type, then the policy, then the last
matching --tensor-type; --keep-output makes output.weight Q8_0."""
import re

from qpatch.families.base import Family, Walk
from qpatch.families.toy.options import OPTIONS
from qpatch.gguf.catalogue import T, is_quantized
from qpatch.gguf.model_facts import ggml_n_dims


class ToyWalk(Walk):
    def decide(self, t):
        ft = self.opts.ftype
        if not t.name.endswith("weight") or ggml_n_dims(t.shape) < 2 or "norm" in t.name or ft.copy:
            self.out.kept(t, ft.copy)
            return
        new, rule, chosen = ft.default, "ftype default", False
        if is_quantized(ft.default) and not self.opts.get("pure"):
            chosen = True
            new, rule = self.apply_policy(t, new, rule, "other")
            for pat, typ in self.opts.overrides:  # the last match wins
                if re.search(pat, t.name):
                    new, rule = typ, f"--tensor-type {pat}"
        if self.opts.get("keep_output") and t.name == "output.weight":
            new, rule = T.Q8_0, "--keep-output"
        if new == t.type:
            self.out.same_type(t, rule, False, chosen)
        else:
            self.out.quantized(t, new, rule, False, chosen)


class Toy(Family):
    name = "toy"
    summary = "a toy family: the ftype's default type, the policy, the last --tensor-type"
    options = OPTIONS

    def walk(self, model, policy, opts):
        return ToyWalk(model, policy, opts)

    def override_result(self, stock, override):
        return override if stock.chosen else None


FAMILY = Toy()
'''

PIN = '''
name = "toy-1"
commit = "0000000000000000000000000000000000000001"
family = "toy"
description = "a toy pin"

[[source]]
kind = "git"
url = "file:///nonexistent"
'''

POLICY = '''
from qpatch.policy.model import Policy, Select, Set, T, rule

POLICY = Policy(name="toy-mix", summary="attn_v in Q8_0", rules=(rule(Select(kinds=("attn_v",)), Set(T.Q8_0)),))
'''


def test_a_toy_family_is_one_folder_and_a_pin(tmp_path):
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "tool" / "qpatch", pkg / "qpatch", ignore=shutil.ignore_patterns("__pycache__"))
    toy = pkg / "qpatch" / "families" / "toy"
    toy.mkdir()
    (toy / "__init__.py").write_text('"""Pin family toy: a test\'s."""\n')
    shutil.copy(ROOT / "tool" / "qpatch" / "families" / "b6700" / "catalogue.json", toy / "catalogue.json")
    shutil.copy(ROOT / "tool" / "qpatch" / "families" / "b6700" / "policy.h.j2", toy / "policy.h.j2")
    (toy / "options.py").write_text(textwrap.dedent(OPTIONS))
    (toy / "predict.py").write_text(textwrap.dedent(PREDICT))
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "patches", patches)
    (patches / "toy-1").mkdir()
    (patches / "toy-1" / "pin.toml").write_text(textwrap.dedent(PIN))
    (patches / "toy-1" / "series").write_text("")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")  # the shipped ones, beside the package as in a checkout
    (tmp_path / "policies" / "toy_mix.py").write_text(textwrap.dedent(POLICY))
    env = {**os.environ, "PYTHONPATH": str(pkg), "QPATCH_PATCHES": str(patches)}

    def qpatch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qpatch", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True)

    r = qpatch("synth", "llama-gqa", "m.gguf")
    assert r.returncode == 0, r.stderr
    assert "--keep-output" in qpatch("plan", "--help").stdout  # the CLI offers the toy's option

    r = qpatch("plan", "m.gguf", "-f", "Q4_0", "--pin", "toy-1", "--policy", "toy-mix", "--keep-output",
               "--tensor-type", "ffn_down=q5_0", "--format", "json")
    assert r.returncode == 0, r.stderr
    import json

    plan = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    assert plan["output.weight"]["type"] == "Q8_0" and plan["output.weight"]["rule"] == "--keep-output"
    assert plan["blk.0.attn_v.weight"]["type"] == "Q8_0" and "toy_mix.py" in plan["blk.0.attn_v.weight"]["rule"]
    assert plan["blk.0.ffn_down.weight"]["type"] == "Q5_0"
    assert plan["blk.0.attn_q.weight"]["type"] == "Q4_0"
    r = qpatch("plan", "m.gguf", "-f", "Q4_0", "--pin", "toy-1", "--keep-output")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0]
    assert "pin=toy-1" in header and "--keep-output" in header  # the header spells it from the declaration

    r = qpatch("plan", "m.gguf", "-f", "Q4_0", "--pin", "0c1e57098", "--keep-output")  # other pins refuse it
    assert r.returncode == 2 and "--keep-output is not an option of pin 0c1e57098's" in r.stderr

    r = qpatch("render", "toy-mix", "--pin", "toy-1")
    assert r.returncode == 0, r.stderr
    assert "@generated" in r.stdout and "Q8_0" in r.stdout

    r = qpatch("export", "toy-mix", "m.gguf", "-f", "Q4_0", "--pin", "toy-1")
    assert r.returncode == 0, r.stderr
    assert "attn_v" in r.stdout and "q8_0" in r.stdout.lower()

    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before  # nothing of the repository was touched

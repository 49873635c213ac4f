"""The policy files the docs show load and plan as written (a doc example that rots is a bug)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from helpers.paths import ROOT
from helpers.zoo import BY_NAME, write_zoo

from qpatch.cli import cli

EXAMPLES = [(doc, i, block) for doc in ("docs/authoring.md", "docs/commands.md")
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S))
            if "POLICY = Policy(" in block]


def test_the_docs_have_policy_examples():
    assert {doc for doc, _, _ in EXAMPLES} == {"docs/authoring.md", "docs/commands.md"}


@pytest.mark.parametrize("doc,i,block", EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_a_policy_example_loads_and_plans(doc, i, block, tmp_path):
    name = re.search(r'name="([a-z0-9-]+)"', block).group(1)
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / f"{name.replace('-', '_')}.py").write_text(block)
    model, imatrix = write_zoo(tmp_path / "zoo", [BY_NAME["deepseek-v3-thin-61L"]])["deepseek-v3-thin-61L"]
    r = CliRunner().invoke(cli, ["--policies", str(tmp_path / "pol"), "plan", str(model), "-f", "IQ2_XXS",
                                 "--imatrix", str(imatrix), "--policy", name])
    assert r.exit_code == 0, r.output
    assert f"pol/{name.replace('-', '_')}.py:" in r.stdout  # some tensor is decided by the example's own rule


def test_the_docs_console_examples_print_what_qpatch_prints():
    """Every `<!-- example: FIXTURE -->` console block of README.md and docs/ is run and its output compared
    (scripts/doc_examples.py; `make docs` rewrites them): an example that rots fails here."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "doc_examples.py"), "--check"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    n = int(r.stderr.split()[0])
    assert n >= 14, r.stderr  # the examples are found (a broken marker would silently check nothing)

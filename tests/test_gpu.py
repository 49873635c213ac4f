"""On a GPU machine: the user's CUDA path end to end. `qpatch fetch`, `apply`, `build --cuda` (for the GPU
present), then `quantize --backend cuda`, whose output is verified tensor by tensor against the plan.

Skipped without nvidia-smi (CI has no GPU). On the device: carry the sdist cache (QPATCH_CACHE) and run
`pytest -m gpu`. bench/cuda_check.sh measures the same path's build times.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers.stock_binary import CURRENT_PIN
from helpers.zoo import BY_NAME, write_zoo

from qpatch.cli import cli

pytestmark = [pytest.mark.gpu, pytest.mark.binary, pytest.mark.sdist]


def test_cuda_build_quantizes_what_the_plan_predicts(tmp_path):
    run = CliRunner().invoke
    tree = tmp_path / "llama.cpp"
    for args in (["fetch", "--pin", CURRENT_PIN, "--dir", str(tree)],
                 ["apply", "deepseek-v3", "--dir", str(tree)],
                 ["build", "--cuda", "--dir", str(tree)]):
        r = run(cli, args)
        assert r.exit_code == 0, (args, r.output)
    model, imatrix = write_zoo(tmp_path / "zoo", [BY_NAME["deepseek2-mla-10L"]])["deepseek2-mla-10L"]
    for ftype in ("IQ2_XXS", "Q4_K_M"):
        r = run(cli, ["quantize", str(model), str(tmp_path / f"{ftype}.gguf"), "-f", ftype, "--imatrix", str(imatrix),
                      "--backend", "cuda", "--dir", str(tree)])
        assert r.exit_code == 0 and "OK: every tensor has the predicted type" in r.output, r.output

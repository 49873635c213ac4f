"""ik_llama.cpp's stock and patched llama-quantize for the ik proofs, from one checkout.

The pin's tree takes minutes to compile on 2 cores (its IQK kernels), so stock and patched share one
checkout under ~/.cache/qpatch/test/patched-<pin>/: the pristine tree is built first with the series'
build patches (0001 restores a missing CMake script, 0002 makes the tree link without the IQK
flash-attention kernels) applied to the work tree only, and its llama-quantize is kept as
`stock-llama-quantize` (a static build: one file). The work tree is then put back, and `PatchedBuild`
applies policies on the same tree; each switch recompiles src/llama-quantize.cpp.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from helpers.cachelock import file_lock
from helpers.policy_build import PatchedBuild
from qpatch.build import cmake
from qpatch.checkout.repo import Checkout
from qpatch.families.pins import load_pin, series

IK_PIN = "ik-55d3c05b"


def build_patches() -> list[Path]:
    """The series less the hook: what stock needs to build at all."""
    return [p for p in series(load_pin(IK_PIN)) if "qpatch-hook" not in p.name]


def _clean_work_tree(tree: Path) -> None:
    """Back to the committed work tree (the restored script is an ignored, untracked file)."""
    subprocess.run(["git", "checkout", "--", "."], cwd=tree, check=True, capture_output=True)
    (tree / "common/cmake/build-info-gen-cpp.cmake").unlink(missing_ok=True)


class IkBuilds(PatchedBuild):
    def __init__(self):
        super().__init__(IK_PIN)
        self.stock_binary = self.root / "stock-llama-quantize"

    def stock(self) -> Path:
        """The pin's stock llama-quantize (no hook), built once and kept beside the checkout."""
        self.ensure()
        with file_lock(self.lock):
            if self.stock_binary.is_file():
                return self.stock_binary
            co = Checkout(self.path)
            try:
                co.reset()
            finally:
                co.close()
            _clean_work_tree(self.path)  # a run killed mid-build may have left the build patches applied
            for patch in build_patches():
                subprocess.run(["git", "apply", str(patch)], cwd=self.path, check=True, capture_output=True)
            try:
                bindir = cmake.build(self.path, "cpu", ["llama-quantize"], progress=None)
            finally:
                _clean_work_tree(self.path)
            tmp = self.stock_binary.with_suffix(".tmp")
            shutil.copy2(bindir / "llama-quantize", tmp)
            tmp.replace(self.stock_binary)
        return self.stock_binary


BUILDS = IkBuilds()

"""Every shipped policy's generated code compiles without a warning on both pin families.

A real checkout of each pin (from its sdist, through the checkout manager), the pin's hook series
and the rendered header applied with `Checkout.apply`, CMake configured with the pin's own
warning flags plus -Werror, and the translation unit that includes the header compiled:
`src/CMakeFiles/llama.dir/llama-quant.cpp.o`. (Full builds and runs of 4227c9be are in
test_policy_differential.py.)
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cachelock import file_lock
from qpatch import render
from qpatch.cache import cache_root
from qpatch.checkout import Checkout
from qpatch.pins import load_pin
from qpatch.policy import loader

POLICIES = ["stock", "n-expert-fix", "ffn-down-bump", "deepseek-v3"]
OBJECT = "src/CMakeFiles/llama.dir/llama-quant.cpp.o"


@pytest.fixture(scope="module", params=["4227c9be", "0c1e57098"])
def configured(request):
    pin = load_pin(request.param)
    root = cache_root() / "test" / f"compile-{pin.name}"
    path = root / "llama.cpp"
    bdir = path / "build-cpu"
    with file_lock(root / "lock"):  # released before the tests run: each test takes it again
        if not (path / ".git").exists():
            Checkout(path).fetch(pin, source="sdist")
        if not (bdir / "build.ninja").exists() and not (bdir / "Makefile").exists():
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.run(["cmake", "-S", str(path), "-B", str(bdir), *gen, "-DCMAKE_BUILD_TYPE=Release",
                            "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                            "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DGGML_CCACHE=OFF",
                            "-DCMAKE_CXX_FLAGS=-Werror"],
                           check=True, capture_output=True)
    return pin, path, bdir


@pytest.mark.binary
@pytest.mark.xdist_group("compile")
@pytest.mark.parametrize("policy", POLICIES)
def test_generated_code_compiles_warning_free(configured, policy):
    pin, path, bdir = configured
    with file_lock(path.parent / "lock"):
        co = Checkout(path)
        try:
            co.apply(pin, {render.GENERATED_PATH: render.render(loader.load(policy), pin.name)},
                     f"qpatch/{policy}", f"qpatch: policy {policy} (compile test)")
        finally:
            co.close()
        (bdir / OBJECT).unlink(missing_ok=True)
        r = subprocess.run(["cmake", "--build", str(bdir), "--target", OBJECT], capture_output=True, text=True)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"{pin.name} {policy}: compile failed:\n{log[-3000:]}"
    assert ": warning:" not in log, f"{pin.name} {policy}: compiler warnings:\n{log[-3000:]}"  # gcc/clang format
    assert (bdir / OBJECT).is_file()

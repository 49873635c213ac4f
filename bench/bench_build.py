"""Build and quantize benchmarks: policy switch -> rebuilt llama-quantize as a fraction of a clean
build, and the patched binary's quantization time against the stock binary's on the same model.

Works in its own checkout under ~/.cache/qpatch/bench (fetched from the sdist, like a user's):
a clean build of the pristine tree (the stock binary, copied aside), then `apply deepseek-v3`
+ build (the hook touches llama-quant.cpp), then policy switches, each rebuilt and timed.
Quantization: a DeepSeek-V3-shaped thin model at Q4_K_M and IQ2_XXS, several runs each, medians,
unpatched against patched with the `stock` policy (same types, so only the hook's cost differs).
Prints one table; numbers are for this machine (`nproc` cores). The pin is the default one
(QPATCH_BENCH_PIN=4227c9be for the older).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qpatch.build import cmake
from qpatch.cache import cache_root
from qpatch.checkout import apply
from qpatch.checkout.repo import Checkout
from qpatch.families.pins import DEFAULT_PIN, load_pin
from qpatch.gguf.synth import deepseek_v3, write_imatrix, write_model

RUNS = int(os.environ.get("QPATCH_BENCH_RUNS", "5"))


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    root = cache_root() / "bench"
    co_dir = root / "llama.cpp"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    pin = load_pin(os.environ.get("QPATCH_BENCH_PIN", DEFAULT_PIN))
    Checkout(co_dir).fetch(pin, source="sdist")
    b = lambda: cmake.build(co_dir, "cpu", ["llama-quantize"], progress=None)  # noqa: E731
    clean = timed(b)
    stock = root / "llama-quantize.stock"
    shutil.copy2(co_dir / "build-cpu" / "bin" / "llama-quantize", stock)
    apply.apply("deepseek-v3", co_dir)
    hook = timed(b)
    switches = []
    for pol in ("n-expert-fix", "ffn-down-bump", "stock"):
        apply.apply(pol, co_dir)
        switches.append((pol, timed(b)))
    patched = co_dir / "build-cpu" / "bin" / "llama-quantize"

    rows = [(f"clean build of llama-quantize (pristine {pin.name})", f"{clean:.1f} s", "")]
    rows.append(("apply deepseek-v3 on pristine, rebuild (hook + header)", f"{hook:.1f} s", f"{hook / clean:.1%}"))
    for pol, t in switches:
        rows.append((f"switch policy -> {pol}, rebuild", f"{t:.1f} s", f"{t / clean:.1%} (goal <= 8%)"))

    with tempfile.TemporaryDirectory() as d:
        spec = deepseek_v3(name="deepseek-v3-thin")
        model, imatrix = Path(d) / "m.gguf", Path(d) / "m.imatrix.gguf"
        write_model(spec, model)
        write_imatrix(spec, imatrix)
        for ftype in ("Q4_K_M", "IQ2_XXS"):
            times = {"stock": [], "patched": []}
            for _ in range(RUNS):
                for name, binary in (("stock", stock), ("patched", patched)):
                    out = Path(d) / f"{name}.gguf"
                    cmd = [str(binary), "--imatrix", str(imatrix), str(model), str(out), ftype, str(os.cpu_count())]
                    times[name].append(timed(lambda: subprocess.run(cmd, check=True, capture_output=True)))
            s, p = statistics.median(times["stock"]), statistics.median(times["patched"])
            rows.append((f"quantize {ftype}: unpatched vs patched (hook + stock policy), median of {RUNS}",
                         f"{s:.3f} s / {p:.3f} s", f"{(p - s) / s:+.1%} (goal < 1%)"))

    w = max(len(r[0]) for r in rows)
    print(f"build and quantize benchmarks, {os.cpu_count()} cores")
    print(f"{'case':<{w}}  {'time':>20}  ratio")
    print("-" * (w + 40))
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>20}  {r[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark: a mix assembled from shelves (copies, and links) against quantizing the same mix.

What a quant maker does instead of `qpatch assemble` is run llama-quantize for every mix. Side by side,
in one run, on this machine: `qpatch quantize` of a mix (the default pin's llama-quantize, all cores)
against `qpatch assemble` of the same mix from shelves, as one file and with `--links`, each checked
byte for byte (the one file) or by `qpatch verify` (the links). Two models:
- the DeepSeek-V3-shaped thin model of `make demo` (61 blocks, real row lengths, 2 rows per matrix);
- the largest DeepSeek-V3-shaped model that fits here comfortably: 64 rows and 8 stored experts per
  matrix (about 1.4 GB of BF16).
The mix is stock's Q4_K_M and deepseek-v3's IQ2_XXS with an imatrix (the shelves hold every type both
plans use). Then disk: N shelves against N separate quants of N mixes.

Shelves are made with the default pin's stock build and quants with its patched build, the tests' own
checkouts under ~/.cache/qpatch/test/ (fetched and built when missing). Assemble and quantize each run
RUNS times (median).

Usage: .venv/bin/python bench/bench_assemble.py [--runs N] [--small]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import stock_binary  # noqa: E402
from helpers.policy_build import PatchedBuild  # noqa: E402

from qpatch.gguf.synth import deepseek_v3, write_imatrix, write_model  # noqa: E402
from qpatch.job import Job  # noqa: E402
from qpatch.quantize import runner  # noqa: E402
from qpatch.shelves import assemble, shelf  # noqa: E402

MIXES = (("stock", "Q4_K_M"), ("deepseek-v3", "IQ2_XXS"))


def _du(paths) -> int:
    """Bytes on disk (allocated blocks), links counted once as links."""
    total = 0
    for p in paths:
        for f in ([p] if p.is_file() or p.is_symlink() else p.rglob("*")):
            if f.is_symlink():
                total += f.lstat().st_blocks * 512
            elif f.is_file():
                total += f.stat().st_blocks * 512
    return total


def _median(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name, spec, tree, work: Path, runs: int) -> list[str]:
    model, im = work / f"{name}.gguf", work / f"{name}.imatrix.gguf"
    write_model(spec, model)
    write_imatrix(spec, im)
    patched = PatchedBuild(stock_binary.CURRENT_PIN)
    patched.ensure()
    jobs = [Job.create(model, ft, policy=p, imatrix=im) for p, ft in MIXES]
    types = shelf.types_for(j.plan() for j in jobs)
    t0 = time.perf_counter()
    sset = shelf.make(model, types, work / f"{name}-shelves", checkout=tree, imatrix=im)
    t_shelves = time.perf_counter() - t0
    rows = []
    quants = []
    for (policy, ft), job in zip(MIXES, jobs):
        real = work / f"{name}-{policy}-{ft}.gguf"
        quants.append(real)

        patched.switch(policy)

        def quantize():  # `qpatch quantize` with the policy compiled in (and its verify)
            real.unlink(missing_ok=True)
            runner.quantize(patched.path, model, real, ft, policy=policy, imatrix=im)

        t_q = _median(quantize, runs)
        copy, links = work / "asm.gguf", work / "links" / "asm.gguf"
        links.parent.mkdir(exist_ok=True)

        def asm_copy():  # the whole of `qpatch assemble`: load the shelves, check hashes (cached), plan, write
            assemble.assemble(model, copy, shelves_dir=sset.dir, policy=policy, ftype=ft, imatrix=im, force=True)

        def asm_links():
            assemble.assemble(model, links, shelves_dir=sset.dir, policy=policy, ftype=ft, imatrix=im, links=True,
                              force=True)

        t_c = _median(asm_copy, runs)
        t_l = _median(asm_links, runs)
        assert Path(copy).read_bytes() == real.read_bytes(), f"{name} {policy} {ft}: assembled file differs"
        first = sorted(links.parent.glob("asm-00001-of-*.gguf"))[0]
        v = subprocess.run([sys.executable, "-m", "qpatch", "verify", str(first)], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
        size = real.stat().st_size
        rows.append(f"| {name} | {policy} {ft} | {size / 2**20:,.1f} MiB | {t_q:.2f} s | {t_c:.3f} s "
                    f"({100 * t_c / t_q:.1f} %) | {t_l:.3f} s ({100 * t_l / t_q:.2f} %) |")
        shutil.rmtree(links.parent)
        copy.unlink()
    shelves_disk = _du([sset.dir])
    quants_disk = _du(quants)
    rows.append(f"| {name} | disk: {len(sset.shelves)} shelves ({t_shelves:.1f} s to make) | "
                f"{shelves_disk / 2**20:,.1f} MiB | {len(quants)} quants: {quants_disk / 2**20:,.1f} MiB | "
                f"{len(sset.shelves)} quants ≈ {len(sset.shelves) * quants_disk / len(quants) / 2**20:,.1f} MiB | |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="only the thin model")
    a = ap.parse_args()
    tree = stock_binary.stock_tools(stock_binary.CURRENT_PIN, ("llama-quantize",)).parents[1]
    models = [("deepseek-v3-thin", deepseek_v3(name="deepseek-v3-thin"))]
    if not a.small:
        models.append(("deepseek-v3-r64", deepseek_v3(name="deepseek-v3-r64", rows=64, stored_experts=8)))
    out = ["| model | mix | size | qpatch quantize | assemble (copies) | assemble --links |",
           "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="qpatch-bench-assemble-", dir=os.environ.get("TMPDIR")) as d:
        for name, spec in models:
            out += bench_model(name, spec, tree, Path(d), a.runs)
    print(f"assemble vs quantize, {os.cpu_count()} cores, median of {a.runs} runs, pin {stock_binary.CURRENT_PIN}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

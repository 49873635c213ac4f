#!/usr/bin/env python3
"""Benchmark: `qpatch plan` on a DeepSeek-V3-shaped model, as a user runs it (a fresh process).

The model has DeepSeek-V3's real header: 61 blocks (3 dense), 256 routed + 1 shared expert,
real shapes, a 129,280-token vocabulary and 127,741 merges in the first shard, split into 5
files like a download. Tensor data are holes (sparse files): 1.3 TB apparent, a few MB on disk.
Each case runs several times in a new process; wall time and peak RSS (wait4's ru_maxrss)
are per process, reported as medians. Goal: under 0.5 s and 150 MB.

Linux carries a process's peak RSS across exec, so a child forked from a big parent reports
the parent's size: this script therefore stays small (no numpy, no gguf) and writes the model
in a child process of its own.

Then, side by side, what a user would run instead: the same pin's `llama-quantize --dry-run`
(0c1e57098, built once under ~/.cache/qpatch/test/ like the tests' stock binary) against
`qpatch plan --pin 0c1e57098` on the real DeepSeek-V3.1 layout (../shared/reference/real-layouts,
1086 tensors, 1.34 TB apparent, a hole), with the ratio of their medians.

Usage: .venv/bin/python bench/bench_plan.py [--runs N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S, GOAL_MB = 0.5, 150
MB = 1 << 20


def run_once(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: llama-quantize logs more than a pipe holds
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode not in (0, 8):  # 8: the plan lists reasons llama-quantize would abort; still a plan
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.read().decode()[-500:]}")
    return wall, usage.ru_maxrss * 1024 / MB


def disk_usage(paths) -> tuple[int, int]:
    """(apparent bytes, bytes actually allocated on disk)."""
    st = [os.stat(p) for p in paths]
    return sum(s.st_size for s in st), sum(s.st_blocks * 512 for s in st)


WRITE = """
import sys
from pathlib import Path
from qpatch.gguf.synth import deepseek_v3, write_sparse_split
spec = deepseek_v3(full=True, tokenizer=True)
paths = write_sparse_split(spec, Path(sys.argv[1]) / "DeepSeek-V3", 5)
print(len(spec.tensors()), *paths, sep="\\n")
"""


WRITE_REAL = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from helpers import real_layouts
print(real_layouts.write("DeepSeek-V3.1-Terminus.json", Path(sys.argv[1]) / "DeepSeek-V3.1-Terminus.gguf"))
"""

BUILD_STOCK = """
import sys
sys.path.insert(0, sys.argv[1])
from helpers import stock_binary
print(stock_binary.stock_quantize(stock_binary.CURRENT_PIN))
"""


def side_by_side(where: Path, qpatch: Path, runs: int):
    tests = Path(__file__).resolve().parents[1] / "tests"
    model = subprocess.run([sys.executable, "-c", WRITE_REAL, str(where), str(tests)], check=True,
                           capture_output=True, text=True).stdout.strip()
    binary = subprocess.run([sys.executable, "-c", BUILD_STOCK, str(tests)], check=True, capture_output=True,
                            text=True).stdout.strip().splitlines()[-1]
    cases = [
        ("llama-quantize --dry-run IQ1_M (0c1e57098)", [binary, "--dry-run", model, "IQ1_M", "1"]),
        ("qpatch plan -f IQ1_M --pin 0c1e57098", [str(qpatch), "plan", model, "-f", "IQ1_M", "--pin", "0c1e57098"]),
        ("  same, --format json",
         [str(qpatch), "plan", model, "-f", "IQ1_M", "--pin", "0c1e57098", "--format", "json"]),
        ("  same, --policy deepseek-v3",
         [str(qpatch), "plan", model, "-f", "IQ1_M", "--pin", "0c1e57098", "--policy", "deepseek-v3"]),
    ]
    print()
    print(f"side by side on DeepSeek-V3.1's real layout ({Path(model).stat().st_size / 2**40:.2f} TiB apparent), "
          f"{runs} runs per case, medians")
    head = f"{'case':<46} {'wall':>8} {'peak RSS':>10} {'wall ratio':>11} {'RSS ratio':>10}"
    print(head)
    print("-" * len(head))
    base = None
    for label, cmd in cases:
        run_once(cmd)
        walls, rss = zip(*(run_once(cmd) for _ in range(runs)))
        wall, mem = statistics.median(walls), statistics.median(rss)
        base = base or (wall, mem)
        print(f"{label:<46} {wall:>6.3f} s {mem:>6.1f} MiB {wall / base[0]:>10.1f}x {mem / base[1]:>9.1f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", type=Path, help="write the model here (default: a temporary directory)")
    args = ap.parse_args()
    qpatch = Path(sys.executable).with_name("qpatch")
    with tempfile.TemporaryDirectory(prefix="qpatch-bench-") as tmp:
        where = args.dir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([sys.executable, "-c", WRITE, str(where)], check=True, capture_output=True, text=True)
        n_tensors, *shards = out.stdout.split()
        apparent, on_disk = disk_usage(shards)
        if on_disk > 64 * MB:
            raise SystemExit(f"sparse model takes {on_disk / MB:.0f} MiB on disk: holes were materialised")
        first = str(shards[0])
        cases = [
            ("qpatch plan -f Q4_K_M", [str(qpatch), "plan", first, "-f", "Q4_K_M"]),
            ("qpatch plan -f Q4_K_M --format json", [str(qpatch), "plan", first, "-f", "Q4_K_M", "--format", "json"]),
            ("qpatch plan -f IQ2_XXS --policy deepseek-v3",
             [str(qpatch), "plan", first, "-f", "IQ2_XXS", "--policy", "deepseek-v3"]),
        ]
        print(f"DeepSeek-V3 header: 61 blocks, 256 experts, {n_tensors} tensors, "
              f"{len(shards)} shards, {apparent / 2**40:.2f} TiB apparent, {on_disk / MB:.1f} MiB on disk; "
              f"{args.runs} runs per case, medians; goal < {GOAL_S} s and < {GOAL_MB} MB")
        head = f"{'case':<46} {'wall':>8} {'min':>8} {'max':>8} {'peak RSS':>10}  goal"
        print(head)
        print("-" * len(head))
        for label, cmd in cases:
            run_once(cmd)  # warm the page cache and .pyc files: we measure the tool, not the disk
            walls, rss = zip(*(run_once(cmd) for _ in range(args.runs)))
            wall, mem = statistics.median(walls), statistics.median(rss)
            ok = "ok" if wall < GOAL_S and mem * MB < GOAL_MB * 1e6 else "OVER"
            print(f"{label:<46} {wall:>6.3f} s {min(walls):>6.3f} s {max(walls):>6.3f} s {mem:>6.1f} MiB  {ok}")
        side_by_side(where, qpatch, args.runs)


if __name__ == "__main__":
    main()

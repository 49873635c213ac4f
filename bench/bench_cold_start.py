#!/usr/bin/env python3
"""Benchmark: qpatch's cold start, against a bare click program (issue 19's goal: at most 1.7x).

Each command runs in a fresh process, N times; the medians and their ratio are printed. The bare program
is a click group with one command and nothing else imported: the least a click CLI costs to start.

Usage: .venv/bin/python bench/bench_cold_start.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL = 1.7
BARE = "import click\n@click.group()\ndef cli():\n    pass\n@cli.command()\ndef x():\n    pass\ncli()\n"


def median_s(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    qpatch = str(Path(sys.executable).parent / "qpatch")
    bare = median_s([sys.executable, "-c", BARE, "--help"], a.runs)
    print(f"{'cold start (median of ' + str(a.runs) + ')':40s} {'seconds':>8s} {'vs bare click':>14s}")
    print(f"{'bare click group --help':40s} {bare:8.3f} {'1.00x':>14s}")
    for args in (["--help"], ["--version"], ["list"]):
        t = median_s([qpatch, *args], a.runs)
        print(f"{'qpatch ' + ' '.join(args):40s} {t:8.3f} {t / bare:13.2f}x")
    print(f"goal: qpatch --help within {GOAL}x of the bare program")
    return 0


if __name__ == "__main__":
    sys.exit(main())

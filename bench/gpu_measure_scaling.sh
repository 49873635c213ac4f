#!/usr/bin/env bash
# `qpatch measure` jobs per minute on one GPU with 1, 2, 4 and 8 Dask workers sharing it (device call).
# The model has the evidence model's shape (train/tiny_moe.py, trained only briefly: timing does not depend on
# the weights); shelves Q8_0, Q4_K, Q2_K; each worker count measures the same jobs into its own table.
# Carried: .whl/, .carry/llama-git.tar, .carry/corpus/. Results: $OUT/scaling.txt, $OUT/scaling.json.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source bench/device_setup.sh
build_beside_training llama-quantize,llama-perplexity "${SECONDS_TRAIN:-20}"
$Q shelves $M --types q8_0,q4_k,q2_k --groups kind --out /tmp/sc/shelves --backend cuda --dir llama.cpp > /tmp/shelves.log 2>&1
for w in 1 2 4 8; do
  /usr/bin/time -f "%e" -o /tmp/t$w $Q measure $M --shelves /tmp/sc/shelves --text .carry/corpus/calib.txt --out /tmp/sc/t$w.json \
      --ctx 512 --chunks 12 --backend cuda --workers $w --dir llama.cpp 2> /tmp/m$w.err | tail -2 | head -1 | sed "s/^/workers=$w: /" \
      | tee -a "$OUT/scaling.txt"
done
.venv/bin/python - <<'PY' | tee "$OUT/scaling.json"
import json
tables = {w: json.load(open(f"/tmp/sc/t{w}.json")) for w in (1, 2, 4, 8)}
def d(t): return {(g["name"], k): e["dkld"] for g in t["groups"] for k, e in g["options"].items()}
base = d(tables[1])
print(json.dumps({w: {"max_abs_diff_vs_1": max(abs(d(t)[k] - base[k]) for k in base)} for w, t in tables.items()}))
PY

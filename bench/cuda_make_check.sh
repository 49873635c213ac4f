#!/usr/bin/env bash
# `make build-cuda` itself on a GPU machine (run through the device tool; CI has no GPU), the way a
# user runs it: a venv of this checkout (the machine's own Python packages plus carried wheels),
# the default pin's checkout with deepseek-v3 applied (carried as its .git: the machine cannot
# download the sdist), then: clean `make build-cuda`, a policy switch, the CUDA llama-quantize's
# --dry-run and a real quantization, each checked with `qpatch plan` / `qpatch verify`.
# Carried: .whl/ (gguf, GitPython, gitdb, smmap), .carry/llama-git.tar (the checkout's .git).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/steps.txt"; }
now() { date +%s.%N; }
dt() { python3 -c "print(f'{$2-$1:.1f}')"; }

nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc --version | tail -1 | tee -a "$OUT/gpu.txt"
python3 -m venv .venv
# the machine's python3 is itself a venv (torch, click, jinja2, numpy, ...): let ours see its packages
python3 -c 'import site; print(site.getsitepackages()[0])' > "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/machine.pth"
.venv/bin/pip install -q --no-index --no-deps .whl/*.whl
.venv/bin/pip install -q --no-index --no-deps --no-build-isolation -e .
touch .venv/bin/qpatch  # make's setup target: the venv is made, do not reinstall from the network
Q=.venv/bin/qpatch
mkdir -p llama.cpp && tar xf .carry/llama-git.tar -C llama.cpp && git -C llama.cpp checkout -q -f HEAD
$Q status | tee -a "$OUT/steps.txt"

log "make build-cuda (clean, deepseek-v3 applied)"
t0=$(now); make build-cuda > "$OUT/build-clean.log" 2>&1; t1=$(now)
log "clean: $(dt $t0 $t1) s"
log "qpatch apply n-expert-fix && make build-cuda"
t2=$(now); $Q apply n-expert-fix | tee -a "$OUT/steps.txt"; make build-cuda > "$OUT/build-switch.log" 2>&1; t3=$(now)
log "switch: $(dt $t2 $t3) s"
$Q apply deepseek-v3 >> "$OUT/steps.txt"; t4=$(now); make build-cuda >> "$OUT/build-switch.log" 2>&1; t5=$(now)
log "switch back: $(dt $t4 $t5) s"
grep -i "warning" "$OUT/build-clean.log" | grep -i "llama-quant" > "$OUT/quant-warnings.txt" || true
log "warnings from llama-quant.cpp / the generated header: $(wc -l < "$OUT/quant-warnings.txt")"
BIN=llama.cpp/build-cuda/bin/llama-quantize
ldd $BIN | grep -ci cuda | sed 's/^/CUDA libraries linked: /' | tee -a "$OUT/steps.txt"

M=/tmp/m; mkdir -p $M
$Q synth deepseek-v3 $M/ds.gguf --imatrix $M/ds.imatrix.gguf --force | tail -1
for ft in IQ1_M IQ2_XXS Q4_K_M Q2_0; do
  t=$(now)
  PYTHONPATH=tests .venv/bin/python - "$BIN" "$M/ds.gguf" "$M/ds.imatrix.gguf" "$ft" <<'PY' | tee -a "$OUT/steps.txt"
import sys, time
from pathlib import Path
import dry_run
b, m, im, ft = sys.argv[1:]
t = time.perf_counter()
p = dry_run.check(Path(b), Path(m), ft, pin="0c1e57098", imatrix=Path(im), policy="deepseek-v3")
print(f"CUDA --dry-run {ft} == qpatch plan --policy deepseek-v3: {len(p.tensors)} tensors ({time.perf_counter()-t:.2f} s)")
PY
done
log "qpatch quantize --backend cuda (real run, verified)"
t6=$(now)
$Q quantize $M/ds.gguf $M/ds-IQ1_M.gguf --ftype IQ1_M --imatrix $M/ds.imatrix.gguf --policy deepseek-v3 \
   --backend cuda 2>&1 | tail -3 | tee -a "$OUT/steps.txt"
t7=$(now); log "quantize + verify: $(dt $t6 $t7) s"
$Q verify $M/ds-IQ1_M.gguf --policy deepseek-v3 --source $M/ds.gguf --imatrix $M/ds.imatrix.gguf | tail -1 | tee -a "$OUT/steps.txt"
$Q diff --stat | tee -a "$OUT/steps.txt"

#!/usr/bin/env bash
# The measure/fit evidence (issue 22) on a GPU machine, in one device call (CI has no GPU):
#   1. the default pin's checkout (carried as its .git) built with CUDA by `qpatch build --cuda`
#      (llama-quantize, llama-perplexity, llama-imatrix), while, at the same time,
#   2. train/tiny_moe.py trains the small DeepSeek-V3-shaped MoE on the GPU from the corpus that
#      train/corpus.py tokenized with the pin's llama-tokenize (carried: .carry/corpus);
#   3. the pin's llama-imatrix makes its imatrix (CUDA) from the calibration text;
#   4. bench/fit_evidence.py: shelves, `measure` on the calibration text (Dask, several workers
#      sharing the GPU), fits at stock's sizes and below, assembled, `eval` on the held-out text.
# Results land in $OUT: steps.txt, train.json, results.json, results.md, table.json,
# policies.tar.gz, logs.tar.gz. Carried: .whl/ (gguf, GitPython, dask, distributed and their
# pure-Python dependencies), .carry/llama-git.tar, .carry/corpus/.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SECONDS_TRAIN=${SECONDS_TRAIN:-200}
WORKERS=${WORKERS:-4}
save() {
  cp /tmp/fit/results.json /tmp/fit/results.md /tmp/fit/table.json "$OUT/" 2>/dev/null || true
  [ -d /tmp/fit/policies ] && tar czf "$OUT/policies.tar.gz" -C /tmp/fit policies || true
  tar czf "$OUT/logs.tar.gz" -C /tmp logs 2>/dev/null || true
}
trap save EXIT
mkdir -p /tmp/fit

nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee -a "$OUT/steps.txt"
source bench/device_setup.sh
$Q status --dir llama.cpp | head -3 | tee -a "$OUT/steps.txt"

t0=$SECONDS
build_beside_training llama-quantize,llama-perplexity,llama-imatrix "$SECONDS_TRAIN"

log "llama-imatrix (CUDA)"
llama.cpp/build-cuda/bin/llama-imatrix -m $M -f .carry/corpus/calib.txt -c 512 --chunks 100 -ngl 999 \
    -o $MD/imatrix.gguf > /tmp/logs/imatrix.log 2>&1

log "fit evidence: shelves, measure (calibration text), fits, assemble, eval (held-out text)"
.venv/bin/python bench/fit_evidence.py --model $M --imatrix $MD/imatrix.gguf \
    --measure-text .carry/corpus/calib.txt --eval-text .carry/corpus/heldout.txt --dir llama.cpp --backend cuda \
    --workers "$WORKERS" --ctx 512 --measure-chunks "${MEASURE_CHUNKS:-12}" --eval-chunks "${EVAL_CHUNKS:-40}" \
    --groups kind ${CANDIDATES:+--candidates "$CANDIDATES"} --work /tmp/fw --out /tmp/fit 2>&1 | tee /tmp/logs/fit.log | grep -v "^\[ *[0-9.]* s\] \[" \
    | tee -a "$OUT/steps.txt"
log "done at $((SECONDS - t0)) s"

#!/usr/bin/env bash
# The quality sweep of issue 11 on a GPU machine (through the device tool; CI has no GPU):
#   1. the default pin's checkout (carried as its .git) built with CUDA by `qpatch build --cuda`
#      (llama-quantize, llama-perplexity, llama-imatrix), while, at the same time,
#   2. train/tiny_moe.py trains the small DeepSeek-V3-shaped MoE on the GPU from the corpus that
#      train/corpus.py tokenized with the pin's llama-tokenize (carried: .carry/corpus) and writes
#      it as BF16 GGUF;
#   3. the pin's llama-imatrix makes its imatrix (CUDA) from the corpus' calibration text;
#   4. `qpatch sweep` (CUDA) over 4 policies x 5 ftypes on the held-out text, then the same sweep
#      again to measure the cache.
# Results land in $OUT: steps.txt, train.json, sweep.json, sweep.txt, sweep.png, logs.tar.gz.
# Carried: .whl/, .carry/llama-git.tar, .carry/corpus/ (bench/device_setup.sh says what each holds).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SECONDS_TRAIN=${SECONDS_TRAIN:-150}
CHUNKS=${CHUNKS:-64}
trap 'tar czf "$OUT/logs.tar.gz" -C /tmp logs 2>/dev/null || true' EXIT

nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee -a "$OUT/steps.txt"
source bench/device_setup.sh
$Q status --dir llama.cpp | tee -a "$OUT/steps.txt"

build_beside_training llama-quantize,llama-perplexity,llama-imatrix "$SECONDS_TRAIN"

log "llama-imatrix (CUDA)"
llama.cpp/build-cuda/bin/llama-imatrix -m $M -f .carry/corpus/calib.txt -c 512 --chunks 200 -ngl 999 -o $MD/imatrix.gguf \
    > /tmp/logs/imatrix.log 2>&1
sha256sum $MD/imatrix.gguf | tee -a "$OUT/steps.txt"

SWEEP=($M --policies stock,n-expert-fix,ffn-down-bump,deepseek-v3 --ftypes IQ2_XXS,IQ2_M,Q2_K,Q3_K_M,Q4_K_M
       --imatrix $MD/imatrix.gguf --text .carry/corpus/heldout.txt --ctx 512 --chunks "$CHUNKS" --backend cuda
       --dir llama.cpp --out /tmp/sweep)
log "qpatch sweep (20 jobs, CUDA)"
t1=$SECONDS
$Q sweep "${SWEEP[@]}" --plot "$OUT/sweep.png" > "$OUT/sweep.txt" 2> /tmp/logs/sweep.err || true
log "sweep: $((SECONDS - t1)) s"; tail -1 /tmp/logs/sweep.err | tee -a "$OUT/steps.txt"
t2=$SECONDS
$Q sweep "${SWEEP[@]}" --format json > "$OUT/sweep.json" 2> /tmp/logs/sweep2.err || true
log "re-run: $((SECONDS - t2)) s"; tail -1 /tmp/logs/sweep2.err | tee -a "$OUT/steps.txt"
cp /tmp/sweep/results.json /tmp/logs/ || true
cat "$OUT/sweep.txt"

log "qpatch eval: two of the sweep's quants against the base (base logits from the cache)"
t3=$SECONDS
$Q eval $M /tmp/sweep/tiny-deepseek-bf16-stock-Q2_K.gguf /tmp/sweep/tiny-deepseek-bf16-deepseek-v3-Q2_K.gguf \
    --text .carry/corpus/heldout.txt --ctx 512 --chunks "$CHUNKS" --backend cuda --dir llama.cpp \
    2> /tmp/logs/eval.err | tee -a "$OUT/steps.txt"
log "eval: $((SECONDS - t3)) s"

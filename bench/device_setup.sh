# Sourced by the device scripts (gpu_sweep.sh, gpu_fit.sh, gpu_measure_scaling.sh): what each call needs
# on a bare GPU machine. Expects OUT set and the carried .whl/ (gguf, GitPython, dask, distributed and
# their pure-Python dependencies), .carry/llama-git.tar (the default pin's checkout) and .carry/corpus/.
log() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.txt"; }
mkdir -p /tmp/logs

# A venv over the machine's Python (it has torch and numpy), with the carried wheels and qpatch.
python3 -m venv .venv
python3 -c 'import site; print(site.getsitepackages()[0])' > "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/machine.pth"
.venv/bin/pip install -q --no-index --no-deps .whl/*.whl
.venv/bin/pip install -q --no-index --no-deps --no-build-isolation -e .
Q=.venv/bin/qpatch
# The checkout (kept by a warm machine that has it already).
mkdir -p llama.cpp && { [ -d llama.cpp/.git ] || tar xf .carry/llama-git.tar -C llama.cpp; } && git -C llama.cpp checkout -q -f HEAD

# build_beside_training TARGETS SECONDS: `qpatch build --cuda` of TARGETS in the background while
# train/tiny_moe.py trains for SECONDS on the GPU a model of shape TINY_MOE_SIZE (small, the default,
# or large; a model a warm machine trained already is reused); then waits for the build. Sets M,
# the model's path.
TINY_MOE_SIZE=${TINY_MOE_SIZE:-small}
MD=/tmp/m-$TINY_MOE_SIZE
build_beside_training() {
  local t0=$SECONDS
  log "qpatch build --cuda (background) while training on the GPU"
  ( $Q build --cuda --dir llama.cpp -t "$1" -D GGML_CUDA_FA=OFF -j 15 -q > /tmp/logs/build.log 2>&1
    echo $? > /tmp/build.rc; echo "build done at $((SECONDS - t0)) s" >> /tmp/logs/build.log ) &
  if [ -f $MD/tiny-deepseek-bf16.gguf ] && [ -f $MD/train.json ]; then
    log "reusing the model trained by an earlier call on this (warm) machine"
  else
    .venv/bin/python train/tiny_moe.py --tree llama.cpp --data .carry/corpus --out $MD --seconds "$2" \
        --size "$TINY_MOE_SIZE" \
        2>&1 | tee /tmp/logs/train.log | grep -v "^step" | tee -a "$OUT/steps.txt"
  fi
  cp $MD/train.json "$OUT/"
  log "training done at $((SECONDS - t0)) s; waiting for the build"
  wait
  tail -1 /tmp/logs/build.log | tee -a "$OUT/steps.txt"
  [ "$(cat /tmp/build.rc)" = 0 ] || { tail -30 /tmp/logs/build.log; exit 1; }
  M=$MD/tiny-deepseek-bf16.gguf
  sha256sum $M | tee -a "$OUT/steps.txt"
}

#!/usr/bin/env bash
# CUDA check on a GPU machine (run through the device tool; CI has no GPU).
# Clean CUDA build of llama-quantize with deepseek-v3 applied, a rebuild after switching to
# n-expert-fix, and quantizations whose outputs come back to be checked with `qpatch plan`.
# Inputs in .carry/: llama-4227c9be.tar.gz (pristine tree), golden models + imatrix files.
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd); W=/tmp/qp-cuda; rm -rf $W; mkdir -p $W
tar xzf .carry/llama-4227c9be.tar.gz -C $W; cd $W/llama.cpp
git init -q . && git apply "$ROOT/patches/4227c9be/0001-qpatch-hook.patch"
cp "$ROOT/tests/golden/deepseek-v3.4227c9be.h" src/llama-quant-qpatch.h
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv | tee "$OUT/gpu.txt"
nvcc --version | tail -2 | tee -a "$OUT/gpu.txt"
ARCHS=${CUDA_ARCHS:-90}
t0=$(date +%s.%N)
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$ARCHS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF > "$OUT/build-clean.log" 2>&1
t1=$(date +%s.%N)
ninja -C build-cuda llama-quantize >> "$OUT/build-clean.log" 2>&1
t2=$(date +%s.%N)
cp "$ROOT/tests/golden/n-expert-fix.4227c9be.h" src/llama-quant-qpatch.h
ninja -C build-cuda llama-quantize > "$OUT/build-switch.log" 2>&1
t3=$(date +%s.%N)
cp "$ROOT/tests/golden/deepseek-v3.4227c9be.h" src/llama-quant-qpatch.h
ninja -C build-cuda llama-quantize >> "$OUT/build-switch.log" 2>&1
t4=$(date +%s.%N)
Q=build-cuda/bin/llama-quantize
ldd $Q | grep -i cuda | head -3 >> "$OUT/gpu.txt" || true
for m in golden-dsv3-mla-10L golden-dsv2-kvb-12L; do
  for ft in IQ1_M Q4_K_M; do
    $Q --imatrix "$ROOT/.carry/$m.imatrix.gguf" "$ROOT/.carry/$m.gguf" "$OUT/$m.$ft.gguf" $ft 8 > "$OUT/q-$m-$ft.log" 2>&1
  done
done
rm -f "$OUT"/q-*.log
python3 - "$t0" "$t1" "$t2" "$t3" "$t4" <<'PY' | tee "$OUT/times.txt"
import sys; t=[float(x) for x in sys.argv[1:]]
print(f"configure {t[1]-t[0]:.1f} s; clean build llama-quantize {t[2]-t[1]:.1f} s; "
      f"rebuild after policy switch {t[3]-t[2]:.1f} s and back {t[4]-t[3]:.1f} s")
PY
grep -c "warning" "$OUT/build-clean.log" | sed 's/^/warnings in clean build log: /' >> "$OUT/times.txt" || true
grep -n "llama-quant" "$OUT/build-clean.log" | grep -i warn >> "$OUT/times.txt" || echo "no warnings from llama-quant.cpp" >> "$OUT/times.txt"

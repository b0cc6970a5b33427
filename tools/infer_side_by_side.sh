#!/usr/bin/env bash
# Decode side by side on the GPU machine, one call: builds efficientllm, runs
# our generate --bench at the 1.1B shape (PRECISIONS, default bf16), then the
# transformers yardstick (compiled static cache and dynamic cache) on the same
# GPU. Through the device tool:
#   run command="bash tools/infer_side_by_side.sh"   (copy ../shared/baselines/torch_infer_bench.py
#   into a carried folder and set YARDSTICK when the shared folder is not there)
set -u
OUT=${OUT:-/tmp/infer_side_by_side}
mkdir -p "$OUT"
PRECISIONS=${PRECISIONS:-bf16}
YARDSTICK=${YARDSTICK:-../shared/baselines/torch_infer_bench.py}
cmake -S . -B build/cuda -G Ninja -DEL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/cfg.log" 2>&1
cmake --build build/cuda -j16 --target efficientllm > "$OUT/build.log" 2>&1 ||
  { echo "build failed"; grep -m5 -A5 "error" "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv,noheader
for p in $PRECISIONS; do
  ./build/cuda/efficientllm generate --model tinyllama-1.1b --bench --device cuda --precision "$p" \
    --batch-sizes 1,8,32 --prompt-len 128 --gen-len 256 --repetitions 3 \
    --report "$OUT/ours_$p.json" > "$OUT/ours_$p.log" 2>&1
  echo "ours $p rc=$?"; tail -5 "$OUT/ours_$p.log"
done
python3 "$YARDSTICK" > "$OUT/torch.log" 2>&1; echo "yardstick rc=$?"
grep '"tok_s"' "$OUT/torch.log"

#!/usr/bin/env bash
# GPU-machine check: build the `cuda` preset, run the CUDA tests, and time the
# issue-3 training workload (Llama-style 124M, B16 x T1024, bf16, AdamW) next
# to the PyTorch yardstick in the same call. Run through the device tool:
#   run command="bash tools/gpu_check.sh" carry=[".devdata"]
# .devdata/ (list it in .git/info/exclude) holds what the GPU machine cannot make itself:
#   ./build/cpu/efficientllm tokenizer train --builtin --out .devdata/tok
#   ./build/cpu/efficientllm data prepare --builtin --tokenizer .devdata/tok.model --out .devdata/ds
#   cp ../shared/baselines/torch_train_bench.py .devdata/
#   mkdir -p .devdata/doc/python3.11/html && cp -r /usr/share/doc/python3.11/html/_sources .devdata/doc/python3.11/html/
# Outputs go to $OUT (logs, JSON reports); a summary is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,power.limit --format=csv | tee "$OUT/smi.csv"

cmake -S . -B build/cuda -G Ninja -DEL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DEL_BUILD_BENCHMARKS=ON \
  > "$OUT/configure.log" 2>&1 || { echo "configure failed"; tail -20 "$OUT/configure.log"; exit 1; }
cmake --build build/cuda -j16 > "$OUT/build.log" 2>&1 || { echo "build failed"; grep -m5 -B2 -A5 error "$OUT/build.log"; exit 1; }

# The GPU machine has no python3-doc: the built-in corpus comes from .devdata/doc
# (a copy of /usr/share/doc/python3.*/html/_sources, see the header).
[ -d .devdata/doc ] && export EL_DOC_ROOT="$PWD/.devdata/doc"
ctest --test-dir build/cuda -L cuda -j4 --output-on-failure > "$OUT/ctest_cuda.log" 2>&1
echo "ctest -L cuda: $(grep -E 'tests passed|tests failed' "$OUT/ctest_cuda.log")"
ctest --test-dir build/cuda -LE cuda -j16 > "$OUT/ctest_cpu.log" 2>&1
echo "ctest (cpu labels) on the GPU machine: $(grep -E 'tests passed|tests failed' "$OUT/ctest_cpu.log")"

if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  ./build/cuda/efficientllm train --model llama-124m --data .devdata/ds --device cuda --precision bf16 \
    -b 16 -t 1024 --steps 30 --warmup 5 --eval-batches 2 --report "$OUT/ours_bf16.json" > "$OUT/ours_bf16.log" 2>&1
  echo "ours (bf16): $(grep -E '^model' "$OUT/ours_bf16.log") rc=$?"
  python3 - "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/ours_bf16.json"))
m = r["metrics"]
tok = m["tokens_per_second"]
n = r["parameters"]; L, d, T = 12, 768, 1024
print(f"ours: {tok:,.0f} tok/s, MFU(6N+12LdT, 989 TF) {100*tok*(6*n+12*L*d*T)/989e12:.1f}%, "
      f"peak live {m['memory_energy'].get('peak_live_bytes', 0)/2**30:.2f} GiB, AL {m['al_seconds']['mean']*1e3:.1f} ms")
PY
  python3 - > "$OUT/torch.log" 2>&1 <<'PY'
src = open(".devdata/torch_train_bench.py").read()
head = src.split("B, T = 16, 1024")[0]
exec(head + """
B, T = 16, 1024
c = LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                intermediate_size=2048, vocab_size=32000, max_position_embeddings=T)
bench("hf-llama-124M kv=4 sdpa", LlamaForCausalLM._from_config(c, attn_implementation="sdpa"), 32000, B, T, compile_=True)
""")
PY
  echo "torch yardstick: $(grep -E '^\{' "$OUT/torch.log" || tail -3 "$OUT/torch.log")"
fi

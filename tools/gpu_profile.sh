#!/usr/bin/env bash
# Per-kernel time of one training step on the GPU machine (Nsight Compute,
# kernel durations only, clocks left alone), summed by kernel name, next to
# the step's wall time. Run through the device tool after tools/gpu_check.sh
# has built build/cuda (or let it build):
#   run command="bash tools/gpu_profile.sh" carry=[".devdata"]
# MODEL/B/T/PRECISION override the workload (default: the issue-3 124M shape).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_profile}
mkdir -p "$OUT"
MODEL=${MODEL:-llama-124m}; B=${B:-16}; T=${T:-1024}; PRECISION=${PRECISION:-bf16}
if [ ! -x build/cuda/efficientllm ]; then
  cmake -S . -B build/cuda -G Ninja -DEL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/configure.log" 2>&1
fi
cmake --build build/cuda -j16 --target efficientllm > "$OUT/build.log" 2>&1 ||
  { echo "build failed"; grep -m5 -B2 -A5 error "$OUT/build.log"; exit 1; }
args=(train --model "$MODEL" --data .devdata/ds --device cuda --precision "$PRECISION" -b "$B" -t "$T"
      --warmup 2 --eval-batches 1)
./build/cuda/efficientllm "${args[@]}" --steps 12 --report "$OUT/plain.json" > "$OUT/plain.log" 2>&1
python3 -c "import json,sys; r=json.load(open('$OUT/plain.json')); print('step ms (no profiler):', [round(s['seconds']*1e3,2) for s in r['metrics']['steps']])"
ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
  ./build/cuda/efficientllm "${args[@]}" --steps 5 --profile-step 4 > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, collections, io
lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
by = collections.defaultdict(lambda: [0, 0.0])
total = 0.0
for r in rows:
    if r["Metric Name"] != "gpu__time_duration.sum": continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r["Metric Unit"]
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    if unit not in scale: sys.exit(f"unknown time unit {unit!r} in the ncu output")
    us = v * scale[unit]
    name = r["Kernel Name"].split("(")[0][:90]
    by[name][0] += 1; by[name][1] += us; total += us
print(f"kernels: {sum(c for c, _ in by.values())}, summed kernel time {total/1e3:.2f} ms")
for name, (c, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"{us/1e3:8.3f} ms {100*us/total:5.1f}% {c:5d}x  {name}")
PY

#!/usr/bin/env bash
# Fine-tuning speed, side by side (issue 5 item 6), in ONE device call: our
# `efficientllm finetune` against transformers + peft (tools/peft_speed_bench.py)
# on the same random Llama-3.2-1B-shaped model, sequence 2048, bf16, same batch.
#   run command="bash tools/gpu_finetune_speed.sh" timeout_s=600
# Targets: our LoRA samples/s >= 1.5x peft's; our DoRA step <= 1.3x our LoRA
# step (peft's DoRA is ~1.85x its LoRA in the paper's Table 7); full FT fits.
#
# Steps: build only the `efficientllm` target; save the random model once to a
# scratch dir (2.5 GB, not $OUT; reused while the machine stays warm); then, in
# this order, each under `timeout`: peft lora, ours lora, ours dora, peft dora,
# ours full, peft full. Every JSON report and log lands in $OUT, plus
# summary.md (printed last). A run that fails, times out or runs out of memory
# is recorded as such and the next one still runs.
#
# Batch: B = 4 (the paper's per-device batch for the 1B model). Memory of
# peft LoRA at B=4, T=2048 (N = 8192 tokens, no gradient checkpointing):
#   bf16 base weights 1.24e9 * 2 B                                    2.5 GB
#   LoRA r=64 on 7 projections: 2.8M params/layer * 16 = 45M,
#     f32 weights + grads + 2 AdamW moments = 16 B/param               0.7 GB
#   activations saved per layer (bf16 unless noted): 2 RMSNorms (f32
#     input + bf16 output, 2 * 96 MB), q/k/v/attn-out/lse (~130 MB),
#     o_proj input (32 MB), MLP gate/up/silu/product (4 * 128 MB)
#     ~0.9 GB/layer * 16                                              14.4 GB
#   logits [8192, 128256]: bf16 2.1 GB + f32 upcast for the loss 4.2 GB
#     + log_softmax 4.2 GB + its gradient 4.2 GB at the backward peak ~15 GB
#   => ~33 GB, well inside an H100's 80 GB (B = 8 would be ~60 GB: tight).
# peft DoRA adds the per-module weight norms (a few GB); peft full FT (f32
# masters + autocast) adds f32 weights/grads/AdamW (20 GB) and the bf16 weight
# copies autocast caches (2.5 GB): ~55 GB, expected to fit (recorded if not).
#
# Env overrides: B, T, STEPS (measured, 10), WARM (warm-up, 3), MODEL (scratch
# dir), PY (python with torch/transformers/peft), BUDGET (seconds for the whole
# script, 560: the device call stops at 600), TINY=1 + DEVICE=cpu (local smoke
# test of this script with a tiny model: BIN=path of a CPU build), SKIP_BUILD=1,
# OURS_ARGS (extra flags for our runs), PEFT_COMPILE=1 (one more run at the
# end, if time is left: peft LoRA under torch.compile, row peft_lora_compile).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_finetune_speed}
mkdir -p "$OUT"
B=${B:-4}; T=${T:-2048}; STEPS=${STEPS:-10}; WARM=${WARM:-3}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
MODEL=${MODEL:-/tmp/el_finetune_speed_llama1b}
BIN=${BIN:-./build/cuda/efficientllm}
BUDGET=${BUDGET:-560}
DEADLINE=$((SECONDS + BUDGET))
RESERVE=20  # seconds kept for the summary
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # the GPU machine has no network
: > "$OUT/status.tsv"

# capped NAME MAX_S CMD... — runs CMD under `timeout min(MAX_S, time left)`,
# stdout+stderr to $OUT/NAME.log; appends "NAME rc seconds" to status.tsv.
capped() {
  local name=$1 max=$2; shift 2
  local left=$((DEADLINE - SECONDS - RESERVE))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped\t0\n' "$name" >> "$OUT/status.tsv"
    echo "$name: skipped (no time left in the ${BUDGET}s budget)"
    return 125
  fi
  [ "$max" -gt "$left" ] && max=$left
  local t0=$SECONDS rc
  timeout -k 10 "$max" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/status.tsv"
  echo "$name: rc=$rc in $((SECONDS - t0)) s (limit ${max} s)"
  return $rc
}

if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,power.limit --format=csv | tee "$OUT/smi.csv"
fi

# ---- build our binary (only the `efficientllm` target)
have_bin=1
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ ! -f build/cuda/build.ninja ]; then
    capped configure 120 cmake -S . -B build/cuda -G Ninja -DEL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a || have_bin=0
  fi
  if [ "$have_bin" = 1 ]; then
    capped build 330 cmake --build build/cuda -j16 --target efficientllm ||
      { have_bin=0; grep -m5 -B2 -A5 -i error "$OUT/build.log"; }
  fi
fi
[ -x "$BIN" ] || have_bin=0
[ "$have_bin" = 1 ] || echo "our binary is not available: our runs are skipped, peft's still run"

# ---- the random model, saved once (a previous call's copy is reused: the
# save renames a finished temp dir into place, so a present dir is complete)
tiny=(); [ "$TINY" = 1 ] && tiny=(--tiny)
if [ -f "$MODEL/config.json" ] && ls "$MODEL"/*.safetensors > /dev/null 2>&1; then
  echo "model: reusing $MODEL"
else
  capped save_model 150 "$PY" tools/peft_speed_bench.py "${tiny[@]}" --device "$DEVICE" --save-model "$MODEL" ||
    { echo "saving the model failed:"; tail -5 "$OUT/save_model.log"; }
fi

peft() {  # peft METHOD [NAME-SUFFIX EXTRA-FLAGS...]
  local m=$1 name=peft_$1${2:-}; shift; [ $# -gt 0 ] && shift
  capped "$name" 150 "$PY" tools/peft_speed_bench.py "${tiny[@]}" --device "$DEVICE" --model "$MODEL" \
    --method "$m" --batch "$B" --seq "$T" --steps "$STEPS" --warmup "$WARM" --r 64 --alpha 128 --dropout 0.0 \
    --json "$OUT/$name.json" "$@"
  grep -E "^$m: " "$OUT/$name.log" || tail -3 "$OUT/$name.log"
}
ours() {  # ours METHOD
  if [ "$have_bin" != 1 ]; then
    printf 'ours_%s\tno-binary\t0\n' "$1" >> "$OUT/status.tsv"; return
  fi
  capped "ours_$1" 150 "$BIN" finetune --hf "$MODEL" --synthetic-samples $((B * (STEPS + WARM))) \
    --seq-len "$T" --batch-size "$B" --method "$1" --lora-r 64 --lora-alpha 128 --lora-dropout 0 \
    --device "$DEVICE" --precision bf16 --steps $((STEPS + WARM)) --timing-warmup "$WARM" --eval-batches 1 \
    --report "$OUT/ours_$1.json" ${OURS_ARGS:-}
  tail -2 "$OUT/ours_$1.log"
}

if [ -f "$MODEL/config.json" ]; then
  peft lora
  ours lora
  ours dora
  peft dora
  ours full
  peft full
  [ "${PEFT_COMPILE:-0}" = 1 ] && peft lora _compile --compile
fi

# ---- summary.md: one row per run, then the ratios the issue asks for
"$PY" - "$OUT" "$B" "$T" <<'PY'
import json, os, sys
out, B, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
status = {}
for line in open(os.path.join(out, "status.tsv")):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 3:
        status[parts[0]] = (parts[1], parts[2])

def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return None

def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d

def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None

def row(name):
    """{step_s, median_s, samples_s, peak, note} for one run, whatever it left behind."""
    r = {"step_s": None, "median_s": None, "samples_s": None, "peak": None, "trainable": None, "note": ""}
    rc, secs = status.get(name, ("not run", "0"))
    j = load(name)
    if name.startswith("peft_") and j:
        r["step_s"], r["median_s"] = num(j.get("mean_step_s")), num(j.get("median_step_s"))
        r["samples_s"], r["peak"] = num(j.get("samples_per_s")), num(j.get("peak_memory_bytes"))
        r["trainable"] = num(j.get("trainable_params"))
        if j.get("oom"):
            r["note"] = "OOM"
        elif j.get("compile_error"):
            r["note"] = "compile failed: " + j["compile_error"][:80].replace("|", "/")
    elif name.startswith("ours_") and j:
        m = j.get("metrics", {})
        r["step_s"] = num(get(m, "al_seconds", "mean"))
        r["median_s"] = num(get(m, "al_seconds", "median"))
        r["samples_s"] = num(m.get("samples_per_second"))
        r["trainable"] = num(m.get("trainable_parameters")) or num(j.get("trainable_parameters"))
        if r["samples_s"] is None and r["step_s"]:
            r["samples_s"] = B / r["step_s"]
        r["peak"] = num(get(m, "memory_energy", "peak_live_bytes")) or \
            num(get(m, "memory_energy", "peak_device_memory_used_bytes"))
    if rc not in ("0",) and not r["note"]:
        log = os.path.join(out, name + ".log")
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        if rc in ("124", "137"):
            r["note"] = "timeout"
        elif "out of memory" in text.lower() or "OutOfMemory" in text:
            r["note"] = "OOM"
        else:
            r["note"] = {"skipped": "skipped (time)", "no-binary": "no binary", "not run": "not run"}.get(rc, f"rc={rc}")
    r["wall"] = secs
    return r

names = ["peft_lora", "ours_lora", "ours_dora", "peft_dora", "ours_full", "peft_full"]
if "peft_lora_compile" in status:
    names.append("peft_lora_compile")
rows = {n: row(n) for n in names}
f = lambda x, fmt: (fmt % x) if x is not None else "-"
lines = [f"# Fine-tuning speed: Llama-3.2-1B shape (random weights), B={B}, T={T}, bf16", ""]
smi = os.path.join(out, "smi.csv")
if os.path.exists(smi):
    lines += ["GPU: " + open(smi).read().splitlines()[-1], ""]
pj = load("peft_lora") or {}
if pj.get("versions"):
    v = pj["versions"]
    lines += [f"peft side: torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}; "
              f"{pj.get('optimizer', '')}; sdpa; no gradient checkpointing", ""]
fj = load("peft_full") or {}
if fj.get("setup"):
    lines += [f"peft full FT setup: {fj['setup']}", ""]
lines += ["| run | samples/s | step ms (mean) | step ms (median) | peak GiB | trainable M | wall s | note |",
          "|---|---|---|---|---|---|---|---|"]
for n in names:
    r = rows[n]
    lines.append(f"| {n} | {f(r['samples_s'], '%.2f')} | {f(r['step_s'] and r['step_s'] * 1e3, '%.1f')} | "
                 f"{f(r['median_s'] and r['median_s'] * 1e3, '%.1f')} | {f(r['peak'] and r['peak'] / 2**30, '%.2f')} | "
                 f"{f(r['trainable'] and r['trainable'] / 1e6, '%.2f')} | "
                 f"{r['wall']} | {r['note']} |")

def ratio(a, b):
    return a / b if a and b else None

checks = [
    ("ours LoRA / peft LoRA, samples/s", ratio(rows["ours_lora"]["samples_s"], rows["peft_lora"]["samples_s"]), ">=", 1.5),
    ("ours DoRA / ours LoRA, step time", ratio(rows["ours_dora"]["step_s"], rows["ours_lora"]["step_s"]), "<=", 1.3),
    ("peft DoRA / peft LoRA, step time (paper ~1.85)", ratio(rows["peft_dora"]["step_s"], rows["peft_lora"]["step_s"]), None, None),
    ("ours DoRA / peft DoRA, samples/s", ratio(rows["ours_dora"]["samples_s"], rows["peft_dora"]["samples_s"]), None, None),
    ("ours full / peft full, samples/s", ratio(rows["ours_full"]["samples_s"], rows["peft_full"]["samples_s"]), None, None),
]
lines += ["", "| ratio | value | target |", "|---|---|---|"]
for label, v, op, target in checks:
    verdict = ""
    if op and v is not None:
        ok = v >= target if op == ">=" else v <= target
        verdict = f"{op} {target} {'PASS' if ok else 'FAIL'}"
    elif op:
        verdict = f"{op} {target} (no data)"
    lines.append(f"| {label} | {f(v, '%.2f')} | {verdict} |")
full = rows["ours_full"]
if full["peak"] is not None and not full["note"]:
    lines.append(f"| ours full FT peak memory | {full['peak'] / 2**30:.2f} GiB | fits one H100 (80 GB): "
                 f"{'PASS' if full['peak'] < 79 * 2**30 else 'FAIL'} |")
else:
    lines.append(f"| ours full FT peak memory | - | fits one H100: no data ({full['note'] or 'no report'}) |")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
PY

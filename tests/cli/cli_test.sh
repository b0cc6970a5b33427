#!/usr/bin/env bash
# CLI tests: exit codes and error messages of the `efficientllm` program on
# good and bad input. Usage: cli_test.sh <efficientllm binary> <case> <fixtures dir>
# Each case prints what it checked; a failed check exits non-zero.
set -uo pipefail
BIN=$1
CASE=$2
FIX=$3
TMP=$(mktemp -d /tmp/el_cli_test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

fail() { echo "FAIL: $*"; exit 1; }

# expect_error <regex> <command...>: non-zero exit and stderr matching regex.
expect_error() {
  local re=$1; shift
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  [ $rc -ne 0 ] || fail "'$*' exited 0; stderr: $(cat "$TMP/err")"
  grep -Eq -- "$re" "$TMP/err" || fail "'$*' stderr does not match /$re/: $(cat "$TMP/err")"
  echo "ok: '$*' -> exit $rc, $(head -1 "$TMP/err")"
}

write_card() {  # write_card <path> <extra yaml lines...>
  local path=$1; shift
  {
    echo "name: cli-test"
    echo "n_layer: 1"
    echo "d_model: 32"
    echo "n_head: 4"
    echo "n_kv_head: 2"
    echo "d_ff: 64"
    echo "vocab_size: 400"
    echo "max_seq_len: 32"
    for line in "$@"; do echo "$line"; done
  } >"$path"
}

# A real dataset from the fixture prose: one document per paragraph file.
make_dataset() {
  mkdir -p "$TMP/docs"
  awk -v dir="$TMP/docs" 'BEGIN{n=0} /^$/ {n++; next} {print > (dir "/p" n ".txt")}' "$FIX/data/prose.txt"
  for i in 1 2 3; do mkdir -p "$TMP/docs/copy$i"; cp "$TMP"/docs/p*.txt "$TMP/docs/copy$i/"; done
  "$BIN" tokenizer train --input "$FIX/data/prose.txt" --out "$TMP/tok" --vocab-size 400 >/dev/null 2>&1 ||
    fail "tokenizer train failed"
  "$BIN" data prepare --input "$TMP/docs" --tokenizer "$TMP/tok.model" --out "$TMP/ds" --val-fraction 0.2 \
    >/dev/null 2>"$TMP/prep.err" || fail "data prepare failed: $(cat "$TMP/prep.err")"
  write_card "$TMP/card.yaml"
}

# write_suite <path> <repetitions> <steps>: a suite of the tiny card on the
# fixture dataset (make_dataset) plus one infer entry this build cannot run.
write_suite() {
  cat >"$1" <<EOF
name: s
sized_for: cpu
repetitions: $2
warmup_steps: 2
allow_missing: true
defaults: {dataset: $TMP/ds, batch_size: 2, seq_len: 16, steps: $3, warmup: 1, eval_batches: 1}
experiments:
  - {axis: pretrain, label: a, card: $TMP/card.yaml}
  - {axis: infer, label: q, model: no-such-model, precision: int4}
EOF
}

case "$CASE" in
  quantize_e2e)
    # RTN and GPTQ (calibrated on the dataset's shards, and on the built-in corpus when installed) of a
    # trained checkpoint; a Hugging Face checkpoint with its tokenizer files.
    make_dataset
    "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 3 -b 2 -t 16 --out "$TMP/run" >/dev/null 2>&1 || fail "train failed"
    CK="$TMP/run/checkpoint.safetensors"
    "$BIN" quantize --init "$CK" --tokenizer "$TMP/tok.model" --bits 4 --group-size 16 --out "$TMP/q4" \
      --report "$TMP/q4.json" >"$TMP/out" 2>&1 || fail "quantize rtn failed: $(cat "$TMP/out")"
    for f in model.safetensors quant_config.json tokenizer.model; do [ -f "$TMP/q4/$f" ] || fail "no $f in --out"; done
    grep -q "5.000 bits/weight" "$TMP/out" || fail "int4 g16 sym is not 5 bits/weight: $(cat "$TMP/out")"
    ls -a "$TMP/q4" | grep -q "\.tmp\." && fail "temporary file left behind"
    "$BIN" quantize --init "$CK" --bits 4 --group-size 16 --method gptq --calib "$TMP/ds" --calib-samples 8 \
      --calib-seq-len 16 --out "$TMP/g4" --report "$TMP/g4.json" >"$TMP/out" 2>&1 || fail "gptq failed: $(cat "$TMP/out")"
    python3 - "$TMP/q4.json" "$TMP/g4.json" <<'PY' || fail "quantize reports: $(cat "$TMP/g4.json")"
import json, math, sys
rtn, gptq = (json.load(open(p)) for p in sys.argv[1:3])
for r in (rtn, gptq):
    assert r["model_bytes_after"] < r["model_bytes_before"] and len(r["slots"]) == 7 and r["bits_per_weight"] == 5.0, r
assert rtn["method"] == "rtn" and gptq["method"] == "gptq" and gptq["calibration_tokens"] == 128
g = sum(s["output_error"] for s in gptq["slots"]); n = sum(s["rtn_output_error"] for s in gptq["slots"])
assert math.isfinite(g) and g < n, (g, n)
PY
    echo "ok: quantize rtn + gptq (shards) of a trained checkpoint"
    if "$BIN" quantize --init "$CK" --tokenizer "$TMP/tok.model" --bits 8 --group-size 16 --method gptq \
        --calib builtin --calib-samples 4 --calib-seq-len 16 --out "$TMP/b8" >"$TMP/out" 2>&1; then
      echo "ok: gptq calibrated on the built-in corpus"
    else
      grep -q "python3-doc" "$TMP/out" || fail "quantize --calib builtin failed: $(cat "$TMP/out")"
      echo "skip: no built-in corpus ($(head -1 "$TMP/out"))"
    fi
    "$BIN" quantize --hf "$FIX/e2e/tiny_chat" --bits 8 --group-size 32 --asym --out "$TMP/hf8" >"$TMP/out" 2>&1 ||
      fail "quantize --hf failed: $(cat "$TMP/out")"
    for f in model.safetensors tokenizer.json tokenizer_config.json; do [ -f "$TMP/hf8/$f" ] || fail "no $f"; done
    grep -q '"format": "efficientllm-quantized"' "$TMP/hf8/quant_config.json" || fail "quant_config.json"
    echo "ok: quantize --hf copies the tokenizer files"
    ;;
  quantize_bad_input)
    H="$FIX/e2e/tiny_chat"
    expect_error "bits = 3 is not supported" "$BIN" quantize --hf "$H" --bits 3 --out "$TMP/x"
    expect_error "give exactly one model source" "$BIN" quantize --out "$TMP/x"
    expect_error "unknown quantization method 'awq'" "$BIN" quantize --hf "$H" --method awq --out "$TMP/x"
    expect_error "q_proj.weight: in_features K = 32 of weight \[32, 32\] is not divisible by the group size 48" \
      "$BIN" quantize --hf "$H" --group-size 48 --out "$TMP/x"
    grep -q "hint: use --group-size N dividing K, or 0 for per-channel" "$TMP/err" || fail "no group-size hint"
    expect_error "the output directory is the source checkpoint's" "$BIN" quantize --hf "$H" --out "$H"
    expect_error "unknown dtype 'f8'" "$BIN" quantize --hf "$H" --dtype f8 --out "$TMP/x"
    make_dataset
    expect_error "calibration length 300 exceeds the model's context \(256 tokens\)" \
      "$BIN" quantize --hf "$H" --group-size 32 --method gptq --calib "$TMP/ds" --calib-seq-len 300 --out "$TMP/x"
    "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 1 -b 2 -t 16 --out "$TMP/run" >/dev/null 2>&1 || fail "train failed"
    expect_error "the built-in calibration text needs the model's tokenizer" \
      "$BIN" quantize --init "$TMP/run/checkpoint.safetensors" --method gptq --out "$TMP/x"
    [ -e "$TMP/x" ] && fail "a failed quantize left $TMP/x behind"
    echo "ok: bad input rejected before any output"
    ;;
  generate_e2e)
    make_dataset
    "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 3 -b 2 -t 16 --out "$TMP/run" >/dev/null 2>&1 || fail "train failed"
    CK="$TMP/run/checkpoint.safetensors"
    "$BIN" generate --init "$CK" --tokenizer "$TMP/tok.model" -p "The model" -p "A" -n 6 --ignore-eos \
      --report "$TMP/g.json" >"$TMP/out" 2>&1 || fail "generate failed: $(cat "$TMP/out")"
    grep -q "^\[1\] A" "$TMP/out" || fail "no second prompt's text: $(cat "$TMP/out")"
    python3 - "$TMP/g.json" <<'PY' || fail "generate report: $(cat "$TMP/g.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert len(r["requests"]) == 2 and all(len(q["tokens"]) == 6 for q in r["requests"]), r
assert all(q["finish_reason"] == "length" and q["ttft_s"] > 0 for q in r["requests"]) and len(r["step_s"]) == 5
PY
    echo "ok: generate from a trained checkpoint, two prompts of different lengths"
    "$BIN" generate --init "$CK" --tokenizer "$TMP/tok.model" -p "x" -n 4 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 3 \
      >"$TMP/a" 2>&1 || fail "sampling failed: $(cat "$TMP/a")"
    "$BIN" generate --init "$CK" --tokenizer "$TMP/tok.model" -p "x" -n 4 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 3 \
      >"$TMP/b" 2>&1
    [ "$(head -1 "$TMP/a")" = "$(head -1 "$TMP/b")" ] || fail "the same seed sampled different text"
    echo "ok: seeded sampling is reproducible"
    "$BIN" quantize --init "$CK" --tokenizer "$TMP/tok.model" --bits 4 --group-size 16 --out "$TMP/q4" >/dev/null 2>&1 ||
      fail "quantize failed"
    "$BIN" generate --quantized "$TMP/q4" -p "The model" -n 5 --ignore-eos >"$TMP/out" 2>&1 ||
      fail "generate --quantized failed: $(cat "$TMP/out")"
    "$BIN" generate --init "$CK" --tokenizer "$TMP/tok.model" --precision int4 --group-size 16 -p "The model" -n 5 \
      --ignore-eos >"$TMP/out2" 2>&1 || fail "generate --precision int4 failed: $(cat "$TMP/out2")"
    [ "$(head -1 "$TMP/out")" = "$(head -1 "$TMP/out2")" ] || fail "saved int4 differs from int4 on load"
    echo "ok: quantize -> save -> load -> generate equals quantize -> generate"
    "$BIN" generate --init "$CK" --tokenizer "$TMP/tok.model" --bench --precision int8 --group-size 16 \
      --batch-sizes 1,2 --prompt-len 8 --gen-len 4 --repetitions 1 --warmup 0 --eval-dataset "$TMP/ds" \
      --eval-seq-len 16 --report "$TMP/b.json" >"$TMP/out" 2>&1 || fail "generate --bench failed: $(cat "$TMP/out")"
    python3 - "$TMP/b.json" <<'PY' || fail "bench report: $(head -c 2000 "$TMP/b.json")"
import json, sys
r = json.load(open(sys.argv[1])); m = r["metrics"]
assert [b["batch"] for b in r["bench"]["batches"]] == [1, 2], r["bench"]
assert m["perplexity"] > 1 and m["it_tokens_per_second"] > 0 and m["bits"] == 8, m
assert len(r["bench"]["batches"][0]["raw"]["step_s"]) == 3, r["bench"]["batches"][0]["raw"]
PY
    echo "ok: generate --bench (int8, perplexity, two batch sizes, raw samples)"
    ;;
  generate_bad_input)
    expect_error "context window of 256" "$BIN" generate --model tiny --ids 1,2,3 -n 300
    grep -q "hint: lower --max-new-tokens to at most 253" "$TMP/err" || fail "no length hint: $(cat "$TMP/err")"
    expect_error "outside the vocabulary" "$BIN" generate --model tiny --ids 1,99999
    expect_error "would fit" "$BIN" generate --model tiny --bench --batch-sizes 100000000 --prompt-len 8 --gen-len 8
    expect_error "2 model sources" "$BIN" generate --model tiny --hf "$FIX/e2e/tiny_chat" --ids 1
    expect_error "no tokenizer for the prompts" "$BIN" generate --model tiny -p "hello"
    expect_error "unknown precision 'int3'" "$BIN" generate --model tiny --ids 1 --precision int3
    expect_error "top_p 0 must be in" "$BIN" generate --model tiny --ids 1 --temperature 1 --top-p 0
    expect_error "not divisible by the group size 48" "$BIN" generate --model tiny --ids 1 --precision int4 --group-size 48
    ;;
  model_info)
    "$BIN" model info tiny >"$TMP/out" 2>&1 || fail "model info tiny failed"
    grep -Eq "^parameters: +[0-9]+" "$TMP/out" || fail "no parameter count: $(cat "$TMP/out")"
    echo "ok: model info tiny"
    ;;
  finetune_e2e)
    # A tiny Hugging Face Llama + its tokenizer.json + alpaca records
    # (tools/make_e2e_fixture.py): full fine-tuning lowers the loss; a DoRA
    # adapter trained, merged and saved gives the same validation loss as the
    # merged model reloaded and as the adapter loaded back onto the base.
    E="$FIX/e2e"
    # tokenizer.json needs PCRE2 + utf8proc (optional in CMake): skip without them.
    if ! "$BIN" tokenizer encode --tokenizer "$E/tiny_chat" "hi" >/dev/null 2>"$TMP/err"; then
      grep -q "support not built" "$TMP/err" && { echo "skip: $(head -1 "$TMP/err")"; exit 77; }
      fail "tokenizer encode on the fixture failed: $(cat "$TMP/err")"
    fi
    "$BIN" finetune --hf "$E/tiny_chat" --data "$E/tiny_chat_sft.jsonl" --method full --epochs 3 \
      --lr 1e-2 --report "$TMP/full.json" >"$TMP/out" 2>&1 || fail "finetune full failed: $(cat "$TMP/out")"
    first=$(grep -o '"loss": [0-9.]*' "$TMP/full.json" | head -1 | awk '{print $2}')
    last=$(grep -o '"train_loss": [0-9.]*' "$TMP/full.json" | head -1 | awk '{print $2}')
    awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a - 0.3)}' || fail "full FT loss did not drop: $first -> $last"
    grep -q '"st_samples_per_param_per_second"' "$TMP/full.json" || fail "no ST in the report"
    echo "ok: full fine-tuning loss $first -> $last"
    "$BIN" finetune --hf "$E/tiny_chat" --data "$E/tiny_chat_sft.jsonl" --method dora --lora-r 4 \
      --lora-alpha 8 --epochs 2 --lr 1e-2 --merge --out "$TMP/m" >"$TMP/out" 2>&1 ||
      fail "finetune dora --merge failed: $(cat "$TMP/out")"
    want=$(grep -o 'val loss [0-9.]*' "$TMP/out" | tail -1)
    for f in config.json model.safetensors tokenizer.json adapter/adapter_config.json adapter/adapter_model.safetensors; do
      [ -f "$TMP/m/$f" ] || fail "--merge did not write $f"
    done
    "$BIN" finetune --hf "$TMP/m" --data "$E/tiny_chat_sft.jsonl" --method full --eval-only >"$TMP/o2" 2>&1 ||
      fail "eval of the merged model failed: $(cat "$TMP/o2")"
    got=$(grep -o 'val loss [0-9.]*' "$TMP/o2" | tail -1)
    [ "$got" = "$want" ] || fail "merged model: $got, the adapter run ended at $want"
    "$BIN" finetune --hf "$E/tiny_chat" --adapter "$TMP/m/adapter" --data "$E/tiny_chat_sft.jsonl" --eval-only \
      >"$TMP/o3" 2>&1 || fail "eval with --adapter failed: $(cat "$TMP/o3")"
    got=$(grep -o 'val loss [0-9.]*' "$TMP/o3" | tail -1)
    [ "$got" = "$want" ] || fail "adapter loaded back: $got, the adapter run ended at $want"
    echo "ok: dora adapter -> merge -> reload: $want three ways"
    for m in freeze lora_plus rslora pissa; do
      "$BIN" finetune --hf "$E/tiny_chat" --data "$E/tiny_chat_sft.jsonl" --method $m --lora-r 4 --freeze-k 1 \
        --steps 2 --out "$TMP/o_$m" >"$TMP/out" 2>&1 || fail "finetune --method $m failed: $(cat "$TMP/out")"
    done
    echo "ok: freeze, lora_plus, rslora, pissa run and save"
    ;;
  finetune_bad_input)
    E="$FIX/e2e"
    # tokenizer.json needs PCRE2 + utf8proc (optional in CMake): skip without them.
    if ! "$BIN" tokenizer encode --tokenizer "$E/tiny_chat" "hi" >/dev/null 2>"$TMP/err"; then
      grep -q "support not built" "$TMP/err" && { echo "skip: $(head -1 "$TMP/err")"; exit 77; }
      fail "tokenizer encode on the fixture failed: $(cat "$TMP/err")"
    fi
    expect_error "unknown fine-tuning method 'qlora'" "$BIN" finetune --hf "$E/tiny_chat" --data "$E/tiny_chat_sft.jsonl" --method qlora
    expect_error "2 model sources" "$BIN" finetune --hf "$E/tiny_chat" --model tiny --data "$E/tiny_chat_sft.jsonl"
    expect_error "no training data" "$BIN" finetune --hf "$E/tiny_chat"
    expect_error "method 'full' has none" "$BIN" finetune --hf "$E/tiny_chat" --data "$E/tiny_chat_sft.jsonl" --method full --merge --out "$TMP/x"
    expect_error "bad.jsonl:[0-9]+" "$BIN" finetune --hf "$E/tiny_chat" --data "$FIX/sft/bad.jsonl" --format alpaca
    "$BIN" finetune --hf "$E/tiny_chat" --data "$FIX/sft/bad.jsonl" "$E/tiny_chat_sft.jsonl" --format alpaca \
      --skip-bad-records --steps 1 >"$TMP/out" 2>&1 || fail "--skip-bad-records failed: $(cat "$TMP/out")"
    grep -Eq "[1-9][0-9]* bad skipped" "$TMP/out" || fail "bad records not counted: $(cat "$TMP/out")"
    echo "ok: --skip-bad-records counts them"
    write_card "$TMP/card.yaml"
    expect_error "tokenizer has [0-9]+ ids but the model's vocab_size is 400" "$BIN" finetune --model "$TMP/card.yaml" \
      --tokenizer "$E/tiny_chat" --data "$E/tiny_chat_sft.jsonl"
    ;;
  model_info_hf)
    "$BIN" model info --hf "$FIX/hf/qwen2" >"$TMP/out" 2>&1 || fail "model info --hf failed: $(cat "$TMP/out")"
    grep -q "model_type qwen2" "$TMP/out" || fail "no model_type line: $(cat "$TMP/out")"
    grep -q "^qkv_bias: true" "$TMP/out" || fail "qwen2's q/k/v biases not mapped: $(cat "$TMP/out")"
    echo "ok: model info --hf qwen2"
    expect_error "no such directory" "$BIN" model info --hf "$TMP/none"
    mkdir -p "$TMP/badhf" && cp -r "$FIX/hf/qwen2/." "$TMP/badhf/"
    sed -i 's/"hidden_size": 64/"hidden_size": 48/' "$TMP/badhf/config.json"
    expect_error "expected \[.*found \[" "$BIN" model info --hf "$TMP/badhf"
    ;;
  tokenizer_json)
    tok="$FIX/tokenizers/qwen2/tokenizer.json"
    if ! "$BIN" tokenizer encode --tokenizer "$tok" "Hello <|im_end|> world" >"$TMP/ids" 2>"$TMP/err"; then
      if grep -q "support not built" "$TMP/err"; then
        echo "skip: $(head -1 "$TMP/err")"
        exit 77
      fi
      fail "encode failed: $(cat "$TMP/err")"
    fi
    # shellcheck disable=SC2046
    "$BIN" tokenizer decode --tokenizer "$tok" $(cat "$TMP/ids") >"$TMP/text" 2>"$TMP/err" ||
      fail "decode failed: $(cat "$TMP/err")"
    grep -q "^Hello <|im_end|> world" "$TMP/text" || fail "round trip gave: $(cat "$TMP/text")"
    echo "ok: tokenizer.json encode/decode round trip"
    echo '{"model": {"type": "WordPiece", "vocab": {}}}' >"$TMP/wp.json"
    expect_error "WordPiece" "$BIN" tokenizer encode --tokenizer "$TMP/wp.json" "x"
    ;;
  unknown_key)
    write_card "$TMP/bad.yaml" "n_layr: 3"
    expect_error "bad.yaml:9.*unknown key 'n_layr'.*n_layer" "$BIN" model info "$TMP/bad.yaml"
    ;;
  bad_heads)
    write_card "$TMP/bad.yaml"
    sed -i 's/n_kv_head: 2/n_kv_head: 3/' "$TMP/bad.yaml"
    expect_error "n_head \(4\) must be divisible by n_kv_head \(3\)" "$BIN" model info "$TMP/bad.yaml"
    ;;
  unknown_card)
    expect_error "no-such-card" "$BIN" model info no-such-card
    ;;
  missing_data)
    expect_error "/nonexistent" "$BIN" train --model tiny --data /nonexistent --steps 1
    ;;
  empty_corpus)
    : >"$TMP/empty.txt"
    expect_error "empty|no text" "$BIN" tokenizer train --input "$TMP/empty.txt" --out "$TMP/t"
    ;;
  corrupt_shard)
    make_dataset
    shard=$(ls "$TMP"/ds/train_*.bin | head -1)
    printf '\x01\x02\x03\x04' | dd of="$shard" bs=1 seek=0 conv=notrunc 2>/dev/null
    expect_error "magic" "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 1 -b 2 -t 16
    ;;
  truncated_shard)
    make_dataset
    shard=$(ls "$TMP"/ds/train_*.bin | head -1)
    truncate -s -100 "$shard"
    expect_error "bytes" "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 1 -b 2 -t 16
    ;;
  token_out_of_vocab)
    make_dataset
    write_card "$TMP/small_vocab.yaml"
    sed -i 's/vocab_size: 400/vocab_size: 100/' "$TMP/small_vocab.yaml"
    expect_error "vocab" "$BIN" train --model "$TMP/small_vocab.yaml" --data "$TMP/ds" --steps 1 -b 2 -t 16
    ;;
  train_and_resume)
    make_dataset
    "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 4 --stop-after 2 -b 2 -t 16 \
      --out "$TMP/run" --report "$TMP/r1.json" >/dev/null 2>&1 || fail "train failed"
    [ -f "$TMP/run/checkpoint.safetensors" ] || fail "no checkpoint"
    [ -f "$TMP/r1.json" ] || fail "no report"
    "$BIN" train --model "$TMP/card.yaml" --data "$TMP/ds" --steps 4 -b 2 -t 16 \
      --resume "$TMP/run/checkpoint.safetensors" >"$TMP/out" 2>&1 || fail "resume failed: $(cat "$TMP/out")"
    grep -q "step 4: val loss" "$TMP/out" || fail "resume did not reach step 4: $(cat "$TMP/out")"
    ls -a "$TMP/run" | grep -q "\.tmp\." && fail "temporary file left behind"
    echo "ok: train, checkpoint, resume"
    ;;
  bench_unwritable)
    expect_error "not writable|cannot create" "$BIN" bench --results-dir /proc/el-cannot-write
    # gpu-lite on the CPU is allowed with a warning, and fails as fast as quick.
    expect_error "warning: suite 'gpu-lite' is sized for a GPU" \
      "$BIN" bench --suite gpu-lite --device cpu --results-dir /proc/el-cannot-write
    grep -Eq "not writable|cannot create" "$TMP/err" || fail "no results-dir error: $(cat "$TMP/err")"
    ;;
  bench_isolated)
    # Each experiment in its own process (the default): the records say so and
    # keep the suite's calibration; a timeout becomes failed rows (exit 1) with
    # the reason. --isolate is still accepted.
    # The pretraining rows only (the finetune rows have their own CLI cases).
    "$BIN" bench --steps 2 --no-probe --filter '^(MHA|GQA|MQA)$' --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err" ||
      fail "isolated quick suite failed: $(tail -5 "$TMP/err")"
    python3 - "$TMP/res" <<'PY' || fail "isolated records: $(cat "$TMP/out")"
import glob, json, sys
recs = [json.loads(l) for f in glob.glob(sys.argv[1] + "/quick-*.jsonl") for l in open(f)]
assert len(recs) == 3, len(recs)
for r in recs:
    run = r["runs"][0]
    assert r["status"] == "ok" and run["isolated"] is True, r["status"]
    assert len(run["metrics"]["peak_calibration"]["batch_gflops"]) > 0
PY
    rm -f "$TMP"/res/quick-*.jsonl
    if "$BIN" bench --isolate --force --steps 2 --no-probe --filter '^(MHA|GQA|MQA)$' --timeout 0.01 \
        --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err"; then
      fail "a timed-out suite exited 0"
    fi
    grep -q "failed" "$TMP/out" || fail "no failed rows: $(cat "$TMP/out")"
    grep -q "timed out after" "$TMP"/res/quick-*.jsonl || fail "no timeout reason in the records"
    echo "ok: isolated runs, timeout rows"
    ;;
  bench_unknown_suite)
    # The error names the valid suites, and comes before the device is opened
    # (so it is the same with --device cuda on a machine without a GPU).
    expect_error "--suite: unknown suite 'nonsense'.*quick, gpu-lite" \
      "$BIN" bench --suite nonsense --results-dir "$TMP/res"
    expect_error "unknown suite 'nonsense'.*quick, gpu-lite" \
      "$BIN" bench --suite nonsense --device cuda --results-dir "$TMP/res"
    [ ! -e "$TMP/res" ] || fail "an unknown suite still created the results directory"
    ;;
  bench_list)
    "$BIN" bench --list >"$TMP/out" 2>"$TMP/err" || fail "bench --list failed: $(cat "$TMP/err")"
    for s in quick gpu-lite paper-arch paper-peft paper-quant; do
      grep -Eq "^$s +(cpu|cuda) +[0-9]+" "$TMP/out" || fail "no row for $s: $(cat "$TMP/out")"
    done
    grep -Eq "^paper-peft +cuda +98 +0 +98 +0 +98 " "$TMP/out" || fail "paper-peft counts: $(cat "$TMP/out")"
    echo "ok: bench --list"
    ;;
  bench_dry_run)
    "$BIN" bench --dry-run >"$TMP/out" 2>"$TMP/err" || fail "bench --dry-run failed: $(cat "$TMP/err")"
    grep -q "^suite quick" "$TMP/out" || fail "dry-run did not default to quick: $(cat "$TMP/out")"
    grep -Eq "^GQA +pretrain +tiny-gqa +B16 T128 x1 steps 400 f32 +ready +[0-9.]+ (s|min) +[0-9a-f]{12}" "$TMP/out" ||
      fail "no GQA row: $(cat "$TMP/out")"
    grep -q "is an estimate" "$TMP/out" || fail "estimate not labelled: $(cat "$TMP/out")"
    grep -Eq "^dora +finetune +pretrained:GQA +dora builtin B8 x1 lr 0.001 +ready" "$TMP/out" ||
      fail "no finetune row: $(cat "$TMP/out")"
    "$BIN" bench --suite paper-peft --dry-run >"$TMP/out" 2>"$TMP/err" || fail "paper-peft dry-run failed"
    grep -q "missing model 'llama-3.2-1b'" "$TMP/out" || fail "paper-peft rows: $(cat "$TMP/out")"
    "$BIN" bench --suite paper-quant --dry-run >"$TMP/out" 2>"$TMP/err" || fail "paper-quant dry-run failed"
    [ "$(grep -c "missing model '" "$TMP/out")" -eq 27 ] ||
      fail "paper-quant rows: $(cat "$TMP/out")"
    "$BIN" bench --suite paper-arch --dry-run >"$TMP/out" 2>"$TMP/err" || fail "paper-arch dry-run failed"
    # Every row has its card (MoE and attention-free included); they wait for the dataset.
    grep -Eq "^0\.5B Mamba +pretrain +mamba-0\.5b +B4 T8192 x1 steps 2000 bf16 +missing dataset" "$TMP/out" ||
      fail "no attention-free row: $(cat "$TMP/out")"
    grep -Eq "^MoE 1\.5Bx8 +pretrain +qwen2\.5-1\.5bx8-moe " "$TMP/out" || fail "no MoE row: $(cat "$TMP/out")"
    grep -q "no card" "$TMP/out" && fail "a paper-arch row lacks its card: $(cat "$TMP/out")"
    echo "ok: bench --dry-run"
    ;;
  bench_filter)
    "$BIN" bench --suite paper-arch --dry-run --filter '^1\.5B (MHA|GQA|MQA|MLA|NSA)$' >"$TMP/out" 2>"$TMP/err" ||
      fail "filter failed: $(cat "$TMP/err")"
    grep -q "5 of 30 experiments selected" "$TMP/out" || fail "filter count: $(cat "$TMP/out")"
    grep -q "^3B" "$TMP/out" && fail "filter kept a 3B row: $(cat "$TMP/out")"
    expect_error "--filter: --filter 'zzz' matches no experiment label" "$BIN" bench --dry-run --filter zzz
    ;;
  bench_bad_suite_file)
    printf 'name: mine\nexperiments:\n  - axis: pretrain\n    card: [tiny, tiny-gqa]\n    bach_size: 8\n' >"$TMP/s.yaml"
    expect_error "s.yaml:5: unknown key 'bach_size' in experiment 1 \(pretrain\) \(did you mean 'batch_size'\?\)" \
      "$BIN" bench --suite "$TMP/s.yaml" --dry-run
    printf 'name: mine\nexperiments: []\n' >"$TMP/s.yaml"
    expect_error "s.yaml:2: the suite has no experiments \(an empty matrix\)" "$BIN" bench --suite "$TMP/s.yaml"
    # An unknown card names the file and line, before anything is written.
    printf 'name: mine\nexperiments:\n  - axis: pretrain\n    card: [tiny, no-such-card]\n' >"$TMP/s.yaml"
    expect_error "s.yaml:4: experiment 'no-such-card': .*no-such-card" \
      "$BIN" bench --suite "$TMP/s.yaml" --results-dir "$TMP/res"
    # So does a filter that leaves nothing to run.
    expect_error "--filter: --filter 'zzz' matches no experiment label" \
      "$BIN" bench --filter zzz --results-dir "$TMP/res"
    [ ! -e "$TMP/res" ] || fail "a refused suite created the results directory"
    ;;
  bench_repeat_skip)
    # A tiny suite run twice: the second run says "cached" and trains nothing;
    # --force runs it again; --in-process runs it in the bench process.
    make_dataset
    write_suite "$TMP/s.yaml" 2 3
    "$BIN" bench --suite "$TMP/s.yaml" --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err" ||
      fail "first run failed: $(tail -5 "$TMP/err")"
    grep -q "^\[1/2\] a started" "$TMP/err" || fail "no progress line: $(cat "$TMP/err")"
    grep -Eq "^\[1/2\] a: ok, 2 repetitions in [0-9]+s  elapsed [0-9]+s  eta [0-9]+s$" "$TMP/err" ||
      fail "no end line: $(cat "$TMP/err")"
    python3 - "$TMP/res" <<'PY' || fail "first run's records: $(cat "$TMP/out")"
import glob, json, sys
files = glob.glob(sys.argv[1] + "/s-*.jsonl")
assert len(files) == 1, files
recs = [json.loads(l) for l in open(files[0])]
assert [r["label"] for r in recs] == ["a", "q"], recs
a, q = recs
assert a["status"] == "ok" and a["repetitions"] == 2, a["status"]
assert [r["isolated"] for r in a["runs"]] == [True, True]
assert a["summary"]["tokens_per_second"]["n"] == 2
assert a["config"]["train"]["timing_warmup_steps"] == 2 and a["config"]["device_kind"] == "cpu"
# The children left the suite's 2 warm-up steps out of the timings: 3 steps, 1 timed.
assert [r["metrics"]["al_seconds"]["n"] for r in a["runs"]] == [1, 1], [r["metrics"]["al_seconds"] for r in a["runs"]]
assert q["status"] == "not_supported" and q["reason"].startswith("missing model 'no-such-model'"), q
PY
    sleep 1  # a new run id
    "$BIN" bench --suite "$TMP/s.yaml" --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err" ||
      fail "second run failed: $(tail -5 "$TMP/err")"
    grep -Eq "^\[1/2\] a: cached \(.*/res/s-[0-9-]+\.jsonl:1\)$" "$TMP/err" || fail "not cached: $(cat "$TMP/err")"
    grep -Eq "started|calibrating" "$TMP/err" && fail "the second run trained: $(cat "$TMP/err")"
    grep -q "^a (cached) " "$TMP/out" || fail "no cached row: $(cat "$TMP/out")"
    sleep 1
    "$BIN" bench --suite "$TMP/s.yaml" --results-dir "$TMP/res" --force >"$TMP/out" 2>"$TMP/err" ||
      fail "--force run failed: $(tail -5 "$TMP/err")"
    grep -q "^\[1/2\] a started" "$TMP/err" || fail "--force did not run: $(cat "$TMP/err")"
    sleep 1
    "$BIN" bench --suite "$TMP/s.yaml" --results-dir "$TMP/res" --in-process >"$TMP/out" 2>"$TMP/err" ||
      fail "--in-process run failed: $(tail -5 "$TMP/err")"
    grep -q "^\[1/2\] a started" "$TMP/err" || fail "an in-process run reused isolated results: $(cat "$TMP/err")"
    python3 - "$TMP/res" <<'PY' || fail "records after --force / --in-process"
import glob, json, sys
recs = [json.loads(l) for f in sorted(glob.glob(sys.argv[1] + "/s-*.jsonl")) for l in open(f)]
a = [r for r in recs if r["label"] == "a"]
assert len(a) == 3, len(a)  # first, --force, --in-process (the cached run wrote none)
assert a[0]["config_hash"] == a[1]["config_hash"] != a[2]["config_hash"]
assert [r["isolated"] for r in a[2]["runs"]] == [False, False]
PY
    echo "ok: repetitions, cached, --force, --in-process"
    ;;
  bench_not_supported)
    # Every entry of paper-quant is an infer run: rows and records with the
    # reason, nothing trained, exit 0.
    "$BIN" bench --suite paper-quant --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err" ||
      fail "paper-quant failed: $(tail -5 "$TMP/err")"
    grep -q "warning: suite 'paper-quant' is sized for a GPU" "$TMP/err" || fail "no size warning: $(cat "$TMP/err")"
    [ "$(grep -Ec "^[^ ].* +- +not supported$" "$TMP/out")" -eq 27 ] || fail "table rows: $(cat "$TMP/out")"
    [ "$(grep -Ec "^3 experiments not run: missing model '" "$TMP/out")" -eq 9 ] ||
      fail "no note: $(cat "$TMP/out")"
    python3 - "$TMP/res" <<'PY' || fail "not-supported records"
import glob, json, sys
recs = [json.loads(l) for f in glob.glob(sys.argv[1] + "/paper-quant-*.jsonl") for l in open(f)]
assert len(recs) == 27, len(recs)
assert all(r["status"] == "not_supported" and r["reason"].startswith("missing model '") for r in recs)
PY
    [ ! -e "$TMP/res/cache" ] || fail "a dataset was prepared for nothing"
    echo "ok: not-supported rows"
    ;;
  bench_interrupt)
    # Ctrl-C while the second experiment runs: exit 130, the first record
    # intact, the second recorded as interrupted, no child process left.
    make_dataset
    write_suite "$TMP/s.yaml" 1 3
    printf '  - {axis: pretrain, label: long, card: %s, steps: 10000000}\n' "$TMP/card.yaml" >>"$TMP/s.yaml"
    "$BIN" bench --suite "$TMP/s.yaml" --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err" &
    pid=$!
    for _ in $(seq 1 400); do
      grep -q "long started" "$TMP/err" 2>/dev/null && break
      sleep 0.1
    done
    grep -q "long started" "$TMP/err" || { kill -9 $pid; fail "the long experiment never started: $(cat "$TMP/err")"; }
    sleep 1
    kill -INT $pid
    wait $pid
    rc=$?
    [ $rc -eq 130 ] || fail "exit $rc after Ctrl-C, expected 130: $(tail -5 "$TMP/err")"
    grep -q "interrupted: 2 finished record(s) are in .*/res/s-.*\.jsonl" "$TMP/err" || fail "$(cat "$TMP/err")"
    python3 - "$TMP/res" <<'PY' || fail "records after Ctrl-C"
import glob, json, sys
recs = [json.loads(l) for f in glob.glob(sys.argv[1] + "/s-*.jsonl") for l in open(f)]
assert [(r["label"], r["status"]) for r in recs] == [("a", "ok"), ("q", "not_supported"), ("long", "interrupted")], recs
assert "interrupt" in recs[2]["error"]
PY
    pgrep -f "$TMP/ds" >/dev/null && fail "a child process outlived the suite"
    ls -a "$TMP/res" | grep -q "^\.run-" && fail "a child's report file was left behind"
    echo "ok: Ctrl-C keeps the finished records, exit 130"
    ;;
  compare_good)
    # Same experiments on two builds: tiny got faster beyond the noise (3
    # repetitions each), tiny-gqa has one repetition (noise unknown).
    R="$FIX/results"
    "$BIN" compare "$R/a.jsonl" "$R/b.jsonl" >"$TMP/out" 2>"$TMP/err" || fail "compare failed: $(cat "$TMP/err")"
    grep -Eq "quick/tiny +config_hash +tokens_per_second .*1\.200 .*beyond noise" "$TMP/out" ||
      fail "no tiny tokens/s row: $(cat "$TMP/out")"
    grep -q "n=1, noise unknown" "$TMP/out" || fail "no n=1 verdict: $(cat "$TMP/out")"
    "$BIN" compare "$R/a.jsonl" "$R/b.jsonl" --markdown >"$TMP/md" 2>&1 || fail "--markdown failed"
    grep -q "^| experiment | matched by |" "$TMP/md" || fail "no markdown header: $(cat "$TMP/md")"
    "$BIN" compare "$R/a.jsonl" "$R/b.jsonl" --csv >"$TMP/csv" 2>&1 || fail "--csv failed"
    head -1 "$TMP/csv" | grep -q "^experiment,matched_by,metric" || fail "no csv header: $(cat "$TMP/csv")"
    grep -q "^quick/tiny,config_hash,tokens_per_second,tokens/s,1000,1200,1.2,3,3,beyond noise$" "$TMP/csv" ||
      fail "csv row: $(cat "$TMP/csv")"
    # A torn last line (a killed run) is skipped with a warning naming file:line.
    "$BIN" compare "$R/torn.jsonl" "$R/b.jsonl" >"$TMP/out" 2>"$TMP/err" || fail "torn file refused: $(cat "$TMP/err")"
    grep -q "warning: .*torn.jsonl:3: skipped a torn last line" "$TMP/err" || fail "no torn warning: $(cat "$TMP/err")"
    echo "ok: compare text, markdown, csv, torn last line"
    ;;
  compare_bad_input)
    R="$FIX/results"
    expect_error "/nonexistent.jsonl: cannot open" "$BIN" compare /nonexistent.jsonl "$R/b.jsonl"
    expect_error "mixed result-schema versions: .*v1.jsonl has efficientllm.result.v1.*a.jsonl has efficientllm.result.v2" \
      "$BIN" compare "$R/a.jsonl" "$R/v1.jsonl"
    printf '{"schema":"efficientllm.result.v2","suite":"other","label":"x","config_hash":"00"}\n' >"$TMP/other.jsonl"
    expect_error "no common experiments" "$BIN" compare "$R/a.jsonl" "$TMP/other.jsonl"
    head -1 "$R/a.jsonl" >"$TMP/bad.jsonl"; echo "{oops" >>"$TMP/bad.jsonl"; tail -1 "$R/a.jsonl" >>"$TMP/bad.jsonl"
    expect_error "bad.jsonl:2: not a JSON record" "$BIN" compare "$TMP/bad.jsonl" "$R/b.jsonl"
    ;;
  report_good)
    # Groups, ranks with a tie, merged repetitions, a noisy metric, failed and
    # not-supported rows (tests/fixtures/results/make_report_fixture.py).
    R="$FIX/results"
    "$BIN" report "$R/report_mixed.jsonl" >"$TMP/out" 2>"$TMP/err" || fail "report failed: $(cat "$TMP/err")"
    grep -q "^EfficientLLM report: 6 experiments in 2 groups, from 1 file" "$TMP/out" || fail "heading: $(cat "$TMP/out")"
    grep -q "^== quick / pretrain: 4 experiments ==" "$TMP/out" || fail "no quick group: $(cat "$TMP/out")"
    grep -q "^== paper-quant / infer: 2 experiments ==" "$TMP/out" || fail "no infer group: $(cat "$TMP/out")"
    grep -Eq "^GQA +ok +1 +2 +- +1 +1 +1$" "$TMP/out" || fail "GQA rank row: $(cat "$TMP/out")"
    grep -Eq "^MQA +ok +3 +1 +1 +1 +2 +2$" "$TMP/out" || fail "MQA rank row (MFU tie): $(cat "$TMP/out")"
    grep -Eq "^GQA +ok +2 +120.0 .*1350 \+- 1906 \(noisy\)$" "$TMP/out" || fail "GQA values: $(cat "$TMP/out")"
    grep -Eq "^int4 qwen2.5-1.5b +not_supported" "$TMP/out" || fail "not-supported row: $(cat "$TMP/out")"
    grep -q "(failed): timed out after 0.01 s" "$TMP/out" || fail "failed row's error: $(cat "$TMP/out")"
    # A directory: every *.jsonl in it (the .csv beside is ignored); two builds of one config are two rows.
    mkdir -p "$TMP/res"; cp "$R/a.jsonl" "$R/b.jsonl" "$TMP/res/"; echo "x" >"$TMP/res/a.csv"
    "$BIN" report "$TMP/res" >"$TMP/out" 2>"$TMP/err" || fail "directory report failed: $(cat "$TMP/err")"
    grep -q "4 experiments in 1 group, from 2 files" "$TMP/out" || fail "directory: $(cat "$TMP/out")"
    grep -Eq "^tiny @bbbbbbbbbbbb +ok +1 +1 +1 +1$" "$TMP/out" || fail "build rows: $(cat "$TMP/out")"
    "$BIN" report "$R/report_mixed.jsonl" --format md >"$TMP/md" 2>&1 || fail "--format md failed"
    grep -q "^| experiment | status | PPL | AMU | PCU | MFU | AL | tok/s |$" "$TMP/md" || fail "md ranks: $(cat "$TMP/md")"
    grep -q '&lt;b&gt;evil&lt;/b&gt;' "$TMP/md" || fail "md label not escaped: $(cat "$TMP/md")"
    "$BIN" report "$R/report_mixed.jsonl" --format csv -o "$TMP/r.csv" 2>"$TMP/err" || fail "csv -o failed: $(cat "$TMP/err")"
    head -1 "$TMP/r.csv" | grep -q "^suite,axis,experiment,label,status,repetitions,metric,unit,better,mean," ||
      fail "csv header: $(head -1 "$TMP/r.csv")"
    grep -q "^quick,pretrain,GQA,GQA,ok,2,tokens_per_second,tokens/s,higher,1350,.*,1,tiny,950000," "$TMP/r.csv" ||
      fail "csv GQA row: $(cat "$TMP/r.csv")"
    grep -q '^quick,pretrain,"<b>evil</b> & ""quotes"", =SUM(A1)",' "$TMP/r.csv" || fail "csv quoting: $(cat "$TMP/r.csv")"
    "$BIN" report "$R/report_mixed.jsonl" --format all -o "$TMP/all" 2>"$TMP/err" || fail "--format all failed"
    for f in report.txt report.md report.csv report.html; do [ -s "$TMP/all/$f" ] || fail "no $f"; done
    grep -q '<svg id="bar-0-perplexity-svg"' "$TMP/all/report.html" || fail "no PPL bar chart in the html"
    grep -q "<b>evil" "$TMP/all/report.html" && fail "an unescaped label in the html"
    ls -a "$TMP" "$TMP/all" | grep -q "\.tmp" && fail "temporary file left behind"
    # A torn last line (a killed run) is a warning, not an error.
    "$BIN" report "$R/torn.jsonl" >"$TMP/out" 2>"$TMP/err" || fail "torn file refused: $(cat "$TMP/err")"
    grep -q "warning: .*torn.jsonl:3: skipped a torn last line" "$TMP/err" || fail "no torn warning: $(cat "$TMP/err")"
    echo "ok: report text, directory input, md, csv, all, torn last line"
    ;;
  report_bad_input)
    R="$FIX/results"
    expect_error "/nonexistent.jsonl: no such file or directory" "$BIN" report /nonexistent.jsonl
    mkdir -p "$TMP/empty"
    expect_error "empty: no \*.jsonl result files in the directory" "$BIN" report "$TMP/empty"
    expect_error "mixed result-schema versions: .*v1.jsonl has efficientllm.result.v1.*a.jsonl has efficientllm.result.v2" \
      "$BIN" report "$R/a.jsonl" "$R/v1.jsonl"
    head -1 "$R/a.jsonl" >"$TMP/bad.jsonl"; echo "{oops" >>"$TMP/bad.jsonl"; tail -1 "$R/a.jsonl" >>"$TMP/bad.jsonl"
    expect_error "bad.jsonl:2: not a JSON record" "$BIN" report "$TMP/bad.jsonl"
    : >"$TMP/none.jsonl"
    expect_error "none.jsonl: no result records" "$BIN" report "$TMP/none.jsonl"
    expect_error "--format: unknown report format 'pdf'" "$BIN" report "$R/a.jsonl" --format pdf
    expect_error "--format all writes four files and needs an output directory" "$BIN" report "$R/a.jsonl" --format all
    expect_error "/proc/el-cannot-write" "$BIN" report "$R/a.jsonl" -o /proc/el-cannot-write/r.txt
    ;;
  *)
    fail "unknown case $CASE"
    ;;
esac

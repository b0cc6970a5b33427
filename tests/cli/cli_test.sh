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

case "$CASE" in
  model_info)
    "$BIN" model info tiny >"$TMP/out" 2>&1 || fail "model info tiny failed"
    grep -Eq "^parameters: +[0-9]+" "$TMP/out" || fail "no parameter count: $(cat "$TMP/out")"
    echo "ok: model info tiny"
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
    # Each experiment in its own process: the records say so and keep the
    # suite's calibration; a timeout becomes failed rows (exit 1) with the reason.
    "$BIN" bench --isolate --steps 2 --no-probe --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err" ||
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
    if "$BIN" bench --isolate --steps 2 --no-probe --timeout 0.01 --results-dir "$TMP/res" >"$TMP/out" 2>"$TMP/err"; then
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
    "$BIN" bench --suite paper-quant --dry-run >"$TMP/out" 2>"$TMP/err" || fail "paper-quant dry-run failed"
    [ "$(grep -c "not supported by this build: infer axis" "$TMP/out")" -eq 27 ] ||
      fail "paper-quant rows: $(cat "$TMP/out")"
    "$BIN" bench --suite paper-arch --dry-run >"$TMP/out" 2>"$TMP/err" || fail "paper-arch dry-run failed"
    grep -q "not supported by this build: no card 'qwen2.5-0.5b-mla'" "$TMP/out" || fail "no MLA row: $(cat "$TMP/out")"
    echo "ok: bench --dry-run"
    ;;
  bench_filter)
    "$BIN" bench --suite paper-arch --dry-run --filter '^1\.5B qwen' >"$TMP/out" 2>"$TMP/err" ||
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
    # A suite the one-schedule runner cannot run fails before anything is written.
    expect_error "suite 'paper-peft' cannot run in this build" \
      "$BIN" bench --suite paper-peft --results-dir "$TMP/res"
    [ ! -e "$TMP/res" ] || fail "a refused suite created the results directory"
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
  *)
    fail "unknown case $CASE"
    ;;
esac

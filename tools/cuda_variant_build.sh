#!/usr/bin/env bash
# A compile-time variant of one CUDA source next to the normal build, for A/B
# timings in one device call (build/cuda configured and built first):
#   tools/cuda_variant_build.sh SOURCE "FLAGS" OUTDIR TARGET...
#   tools/cuda_variant_build.sh src/cuda/cuda_decode_layer.cu "-DEL_DECODE_WINDOW_TRACE=1" \
#       /tmp/wt cuda_decode_layer_bench
# Recompiles SOURCE's object with FLAGS added, re-archives its static library
# and relinks TARGET... by ninja's own commands, copies the binaries to
# OUTDIR. The next normal build rebuilds the object and relinks. Why not simply
# `cmake --build` after the recompile: ninja finds the object's stored deps
# out of date (an object it did not write) and silently rebuilds it with the
# normal flags, so the "variant" is the tree again (session 30).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 SOURCE FLAGS OUTDIR TARGET..." >&2; exit 2; }
src=$1 flags=$2 out=$3
shift 3
build=${BUILD_DIR:-build/cuda}
base=$(basename "$src")
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$build"
obj=$(ninja -t targets all | grep -o "^[^:]*/${base}\.o" | head -1)
[ -n "$obj" ] || { echo "$0: no object for $src in $build" >&2; exit 1; }
lib=$(ninja -t query "$obj" | awk '/outputs:/{getline; print $1}' | grep '\.a$' | head -1)
[ -n "$lib" ] || { echo "$0: $obj goes into no static library" >&2; exit 1; }
compile=$(ninja -t commands "$obj" | tail -1)
eval "${compile/ -c / $flags -c }"
archive=$(ninja -t commands "$1" | grep -F "ar qc $lib " | head -1)
[ -n "$archive" ] || { echo "$0: no archive command for $lib in $1's commands" >&2; exit 1; }
eval "$archive"
for target in "$@"; do
  eval "$(ninja -t commands "$target" | tail -1)"
  bin=$(ninja -t query "$target" | awk '/input: phony/{getline; print $1; exit}')
  cp "${bin:-$target}" "$out/"
done

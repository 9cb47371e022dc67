#!/usr/bin/env bash
# Builds the GGUF reader's libFuzzer target with clang + ASan/UBSan and runs it for SECONDS
# (default 60) from a seed corpus of valid files. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
pipellm=${PIPELLM_BIN:-build/cli/pipellm}
[ -f build-fuzz/build.ninja ] || CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DPIPELLM_FUZZ=ON >/dev/null
cmake --build build-fuzz --target gguf_fuzz >/dev/null
corpus=build-fuzz/corpus
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
  # Seeds: small valid models of every file type written by our own writer.
  for q in F32 F16 BF16 Q8_0 Q4_0 Q4_K_M Q6_K; do
    "$pipellm" mkmodel --arch qwen2 --layers 1 --embd 256 --ff 256 --heads 2 --vocab-size 300 \
      --quant "$q" "$corpus/seed-$q.gguf" 2>/dev/null ||
      { echo "fuzz.sh: could not write seed $q with $pipellm" >&2; exit 1; }
  done
fi
build-fuzz/tests/fuzz/gguf_fuzz "$corpus" -max_total_time="$seconds" -max_len=200000 -print_final_stats=1 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 15

#!/usr/bin/env bash
# Issue 18's per-type decode figures: the 8B shape in each quantization type llama.cpp users
# download (made by llama.cpp's own llama-quantize from one F16 mkmodel file, so both engines read
# the same bytes), `pipellm bench --device cuda` tg128 beside `llama-bench -n 128` on each file.
# First `scripts/device-arch.sh build` (PipeLLM; with WITH_LLAMA=1 and no prebuilt llama.cpp, also
# llama-bench and llama-quantize). Usage (device machine, carry .carry/sysroot and .carry/llama-bin
# or .carry/llama): TYPES="Q2_K Q3_K_M ..." scripts/device-types.sh
# (default: all eight; about two minutes each, so a 10-minute call takes four). Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
llama_tools llama-bench llama-quantize
wait  # only when llama.cpp is built here
B=build-device
F16=$B/l8-f16.gguf
[ -f $F16 ] || $B/cli/pipellm mkmodel --preset llama3-8b --quant F16 --vocab "$(vocab llama3)" $F16 \
  >"$OUT/mkmodel-f16.log" 2>&1
echo "f16 $(ls -la $F16 | awk '{print $5}') $(since)"
for t in ${TYPES:-Q2_K Q3_K_M Q4_1 Q5_0 Q5_1 Q5_K_M IQ4_NL IQ4_XS}; do
  m=$B/l8-$t.gguf
  [ -f $m ] || timeout 240 $LLAMA_BIN/llama-quantize $F16 $m $t 16 >"$OUT/quantize-$t.log" 2>&1
  timeout 120 $B/cli/pipellm bench -m $m --device cuda --reps 2 --skip-depth --skip-batched --no-f16-cache \
    >"$OUT/pipellm-$t.txt" 2>&1
  echo "pipellm $t rc=$? $(since)"; grep -E "tg128 |read per token" "$OUT/pipellm-$t.txt" | head -3
  timeout 120 $LLAMA_BIN/llama-bench -m $m -ngl 99 -fa 1 -p 0 -n 128 -r 2 -o json >"$OUT/llama-$t.json" 2>/dev/null
  echo "llama-bench $t rc=$? $(since)"; grep -E '"avg_ts"' "$OUT/llama-$t.json" | head -2
  rm -f $m  # disk: one 8B file at a time
done

#!/usr/bin/env bash
# One device call that checks a commit end to end on the GPU machine: build, every GPU test, the
# default model's greedy text on CUDA vs CPU, the pipeline on one GPU (1 rank vs 2 host-staged
# ranks), and tg128 of an 8B Q4_K_M. Logs under $OUT; a short summary last.
# Usage (device machine, carry .carry): scripts/device-verify.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
scripts/device-build.sh pipellm pipellm_gpu_tests pipellm-stage > "$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
P=build-device/cli/pipellm
( $P mkmodel --preset llama3-8b --quant Q4_K_M /tmp/l8.gguf > "$OUT/mkmodel.log" 2>&1 ) &
MK=$!
(cd build-device && timeout 240 ./tests/pipellm_gpu_tests --gtest_brief=1 > "$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"
{
  echo "# default model, greedy 64 tokens: CPU vs CUDA"
  for p in "The jury said" "It was a" "The city of" "In the morning" "He said that"; do
    c=$($P generate -p "$p" -n 64 --temp 0 --print-ids --device cpu 2>/dev/null)
    g=$($P generate -p "$p" -n 64 --temp 0 --print-ids --device cuda 2>/dev/null)
    [ -n "$c" ] && [ "$c" = "$g" ] && echo "same: $p" || { echo "DIFFERENT: $p"; echo " cpu: $c"; echo " gpu: $g"; }
  done
} > "$OUT/default_model.log" 2>&1
echo "default model $(since)"
wait $MK; tail -1 "$OUT/mkmodel.log"
timeout 200 bench/pipeline_gpu_bench.sh /tmp/l8.gguf /tmp/pb > "$OUT/pipeline.log" 2>&1
echo "pipeline bench rc=$? $(since)"
timeout 90 $P bench --device cuda --preset llama3-8b --quant Q4_K_M --reps 3 --skip-depth --skip-batched \
  > "$OUT/bench.log" 2>&1; echo "bench rc=$? $(since)"
echo "==== summary"; git log --oneline -1; nvidia-smi --query-gpu=name --format=csv,noheader
grep -E "FAILED|tests ran|PASSED|SKIPPED" "$OUT/gpu_tests.log" | cut -c1-160 | head -12
cat "$OUT/default_model.log" | cut -c1-200
grep -E "==|tokens/s" "$OUT/pipeline.log" | cut -c1-220
tail -12 "$OUT/bench.log"

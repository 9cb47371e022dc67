#!/usr/bin/env bash
# One device call after a change of defaults: build, the whole GPU test suite (TEST_S seconds at
# most; the fixture sets left out of the upload fail by name), `pipellm_cuda_bench` of the
# llama3-8b Q4_K_M shape with the defaults, then PipeLLM alone on each of PRESETS (synthesised in
# memory, no file: decode and prefill of the MoE / hybrid shapes; default qwen3-30b-a3b).
# Logs under $OUT; a short summary last.
# Usage (device machine, carry .carry/sysroot): [TEST_S=150] [PRESETS="a b"] scripts/device-verify.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
scripts/device-build.sh pipellm_gpu_tests pipellm_cuda_bench >"$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$OUT/build.log"
(cd build-device && timeout ${TEST_S:-150} ./tests/pipellm_gpu_tests --gtest_brief=1 >"$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"
C="build-device/bench/pipellm_cuda_bench --quant Q4_K_M --no-f16-cache --runs 2"
timeout 100 $C --preset llama3-8b >"$OUT/bench_8b.txt" 2>&1; echo "bench 8b rc=$? $(since)"
for p in ${PRESETS:-qwen3-30b-a3b}; do
  timeout 120 $C --preset "$p" --skip-depth >"$OUT/bench_$p.txt" 2>&1; echo "bench $p rc=$? $(since)"
done
echo "==== summary ($(since))"
grep -E "FAILED|tests ran|PASSED" "$OUT/gpu_tests.log" | cut -c1-160 | head -60
for f in "$OUT"/bench_*.txt; do echo "== $f"; grep -hE "^model|^\| |stage total" "$f"; done

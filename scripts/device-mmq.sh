#!/usr/bin/env bash
# Issue 17/14's device call for the tensor-core product on quantized blocks (kernels/cuda/mmq.cu):
# build, the mmq and all GPU tests, then `pipellm bench` on the 8B Q4_K_M shape without f16
# copies, with mmq up to 64 rows (the default), off, and up to 512 rows. Logs under $OUT.
# Usage (device machine, carry .carry/sysroot): scripts/device-mmq.sh [bench flags...]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
M=build-device/l8-q4km.gguf
scripts/device-build.sh pipellm pipellm_gpu_tests >"$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -30
[ -f $M ] || build-device/cli/pipellm mkmodel --preset llama3-8b --quant Q4_K_M \
  --vocab "$(vocab llama3)" $M >"$OUT/mkmodel.log" 2>&1 &
(cd build-device && timeout 120 ./tests/pipellm_gpu_tests --gtest_filter='*Mmq*' >"$OUT/mmq_tests.log" 2>&1)
echo "mmq tests rc=$? $(since)"; grep -E "FAILED|PASSED|Failure|rel|bit" "$OUT/mmq_tests.log" | head -30
(cd build-device && timeout 240 ./tests/pipellm_gpu_tests --gtest_brief=1 ${GPU_FILTER:+--gtest_filter=$GPU_FILTER} \
  >"$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"; grep -E "FAILED|tests ran|PASSED" "$OUT/gpu_tests.log" | head -30
wait
for rows in ${MMQ_ROWS:-64 0 512}; do
  [ $(( $(date +%s) - S )) -lt ${BUDGET_S:-420} ] || { echo "skipping mmq-max-rows $rows: out of time"; continue; }
  timeout 150 build-device/cli/pipellm bench --device cuda -m $M --reps 2 --skip-depth --no-f16-cache \
    --mmq-max-rows $rows "$@" >"$OUT/bench-mmq$rows.txt" 2>&1
  echo "bench mmq-max-rows $rows rc=$? $(since)"; grep -vE "^\s*$" "$OUT/bench-mmq$rows.txt" | tail -14
done
nvidia-smi --query-gpu=name,memory.used --format=csv

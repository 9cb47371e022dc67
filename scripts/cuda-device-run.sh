#!/usr/bin/env bash
# One device call for the CUDA engine: build, GPU tests, benchmarks, an ncu per-kernel profile
# of decode. Logs go to $OUT (or ./device-out). Usage: scripts/cuda-device-run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
( time scripts/device-build.sh pipellm_gpu_tests pipellm_cuda_bench ) > "$OUT/build.log" 2>&1
echo "build rc=$?"; grep -E "error" -A3 "$OUT/build.log" | head -20
cd build-device
git -C .. rev-parse --short HEAD
timeout 150 ./tests/pipellm_gpu_tests --gtest_brief=1 > "$OUT/gpu_tests.log" 2>&1; echo "gpu tests rc=$?"
grep -E "FAILED|Failure|Expected|Which is|actual|PASSED|tests ran|worst|agree|argmax at" "$OUT/gpu_tests.log" | cut -c1-200 | head -60
B=./bench/pipellm_cuda_bench
timeout 130 $B --preset llama3-8b --quant Q4_K_M --runs 3 --json "$OUT/bench_llama3-8b_Q4_K_M.json" > "$OUT/bench_q4km.log" 2>&1
echo "bench rc=$?"; cat "$OUT/bench_q4km.log"
timeout 110 ncu --clock-control none --launch-skip 760 --launch-count 380 \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --page raw \
  $B --preset llama3-8b --quant Q4_K_M --no-f16-cache --skip-depth --skip-batched --profile-steps 4 \
  > "$OUT/ncu.csv" 2> /tmp/ncu.err; echo "ncu rc=$?"; tail -3 /tmp/ncu.err
python3 ../bench/ncu_summary.py "$OUT/ncu.csv" > "$OUT/ncu_summary.txt" 2>&1; cat "$OUT/ncu_summary.txt"
for m in "llama3-8b Q4_0" "llama3-8b Q8_0" "llama3.2-1b Q4_K_M"; do
  set -- $m
  timeout 45 $B --preset $1 --quant $2 --runs 3 --skip-depth --skip-batched > /tmp/b.log 2>&1
  echo "== $1 $2 rc=$?"; cat /tmp/b.log >> "$OUT/bench_others.log"; grep -E "^\| (pp|tg)|^model" /tmp/b.log
done

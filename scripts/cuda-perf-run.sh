#!/usr/bin/env bash
# One device call for the CUDA decode-speed work: build, every GPU test, the benchmark through
# `pipellm bench --device cuda` (all four models), an ncu per-kernel profile of one decode step
# (kernels told apart by grid size). Logs under $OUT (8 files at most); a short summary last.
# Usage (on the device machine, carry .carry): scripts/cuda-perf-run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
S=$(date +%s)
( time scripts/device-build.sh pipellm pipellm_gpu_tests pipellm_cuda_bench ) > "$OUT/build.log" 2>&1
echo "build rc=$? $(( $(date +%s) - S ))s"; grep -E "error" -A3 "$OUT/build.log" | head -20
cd build-device
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
timeout 170 ./tests/pipellm_gpu_tests --gtest_brief=1 > "$OUT/gpu_tests.log" 2>&1; echo "gpu tests rc=$? $(( $(date +%s) - S ))s"
B="./cli/pipellm bench --device cuda"
timeout 120 $B --preset llama3-8b --quant Q4_K_M --reps 3 --json > "$OUT/bench_q4km.json" 2> "$OUT/bench_q4km.log"
echo "bench q4km rc=$? $(( $(date +%s) - S ))s"
for m in "llama3-8b Q4_0" "llama3-8b Q8_0" "llama3-8b Q5_K_M" "llama3.2-1b Q4_K_M"; do
  set -- $m
  timeout 50 $B --preset $1 --quant $2 --reps 3 --skip-depth --skip-batched --json >> "$OUT/bench_others.json" 2> /tmp/b.log
  echo "bench $1 $2 rc=$?"; cat /tmp/b.log >> "$OUT/bench_others.log"
done
timeout 100 ncu --clock-control none --launch-skip 760 --launch-count 380 \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size --csv --page raw \
  ./bench/pipellm_cuda_bench --preset llama3-8b --quant Q4_K_M --no-f16-cache --skip-depth --skip-batched \
  --profile-steps 4 > /tmp/ncu.csv 2> /tmp/ncu.err; echo "ncu rc=$?"; tail -2 /tmp/ncu.err
python3 ../bench/ncu_summary.py /tmp/ncu.csv > "$OUT/ncu_summary.txt" 2>&1
echo "==== summary ($(( $(date +%s) - S ))s)"; git -C .. log --oneline -1; cat "$OUT/gpu.txt"
grep -E "FAILED|Failure|tests ran|PASSED|firm steps" "$OUT/gpu_tests.log" | cut -c1-160 | head -20
head -30 "$OUT/ncu_summary.txt"
grep -hE "^model|^\| " "$OUT/bench_q4km.log" "$OUT/bench_others.log"

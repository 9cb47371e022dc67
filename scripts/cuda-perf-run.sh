#!/usr/bin/env bash
# One device call for the CUDA speed work: build, every GPU test, `pipellm bench --device cuda` of
# the 8B Q4_K_M shape on the server's path (no f16 copies), and an ncu per-kernel profile of
# decode steps (kernels told apart by grid size): one sequence, or ROWS="N ..." batched sequences
# (the first N for the whole step, each N for the details of one layer's quantized products).
# Logs under $OUT (8 files at most); a short summary last.
# Usage (on the device machine, carry .carry/sysroot): [ROWS="16 64"] scripts/cuda-perf-run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
scripts/device-build.sh pipellm pipellm_gpu_tests pipellm_cuda_bench \
  > "$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
cd build-device
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv >> "$OUT/build.log" 2>&1
timeout ${TEST_S:-240} ./tests/pipellm_gpu_tests --gtest_brief=1 > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests rc=$? $(since)"
timeout 150 ./cli/pipellm bench --device cuda --preset llama3-8b --quant Q4_K_M --reps 3 --no-f16-cache \
  > "$OUT/bench_q4km.log" 2>&1
echo "bench q4km rc=$? $(since)"
# Ablations, same machine, one log: q/k/v and gate/up in separate mmq launches; attention splits
# aiming at 2 blocks per SM, and on tensor cores (tg128 at depth 4096 beside the default run's); the mmq layout before
# ba4974b (3-4 stages, 2 blocks per SM, no shared scales) as the baseline of the defaults.
C="./bench/pipellm_cuda_bench --preset llama3-8b --quant Q4_K_M --no-f16-cache --runs 2"
ablation() {
  local name=$1; shift
  echo "==== $name: $*" >> "$OUT/ablations.log"
  timeout 100 $C "$@" >> "$OUT/ablations.log" 2>&1
  echo "ablation $name rc=$? $(since)"
}
ablation unfused --skip-depth --mmq-fuse 0
ablation attn2 --skip-batched --attention-blocks-per-sm 2
ablation attn_cuda_cores --skip-batched --attention-mma 0
ablation old_mmq --skip-depth --mmq-stages 0 --mmq-blocks-per-sm 2 --mmq-shared-scales 0
M="--metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size --csv --page raw"
B="./bench/pipellm_cuda_bench --preset llama3-8b --quant Q4_K_M --no-f16-cache --skip-depth"
R1=${ROWS%% *}
if [ "${R1:-1}" -gt 1 ]; then
  timeout 150 ncu --clock-control none --profile-from-start off $M $B --profile-batched "$R1" > /tmp/ncu.csv 2> /tmp/ncu.err
  echo "ncu rc=$? $(since)"; tail -2 /tmp/ncu.err
  python3 ../bench/ncu_summary.py /tmp/ncu.csv > "$OUT/ncu_summary.txt" 2>&1
  # Where the quantized products' time goes: one layer's seven products (q k v o gate up down),
  # for each batch size in ROWS.
  for r in $ROWS; do
    echo "==== $r rows" >> "$OUT/ncu_mmq.txt"
    timeout 100 ncu --clock-control none --profile-from-start off -k regex:mmq_kernel --launch-count 7 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section SchedulerStats --section MemoryWorkloadAnalysis $B --profile-batched "$r" >> "$OUT/ncu_mmq.txt" 2>&1
  done
else
  timeout 100 ncu --clock-control none --profile-from-start off $M $B --skip-batched --profile-steps 2 \
    > /tmp/ncu.csv 2> /tmp/ncu.err
  echo "ncu rc=$? $(since)"; tail -2 /tmp/ncu.err
  python3 ../bench/ncu_summary.py /tmp/ncu.csv > "$OUT/ncu_summary.txt" 2>&1
fi
echo "==== summary ($(since))"; git -C .. log --oneline -1; tail -2 "$OUT/build.log"
grep -E "FAILED|Failure|tests ran|PASSED" "$OUT/gpu_tests.log" | cut -c1-160 | head -40
head -40 "$OUT/ncu_summary.txt"
grep -hE "^model|^upload|device memory|^\| |^==== " "$OUT/bench_q4km.log" "$OUT/ablations.log"

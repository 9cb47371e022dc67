#!/usr/bin/env bash
# One device call for the quantized tensor-core products (issues 14, 17, 15): build, the whole GPU
# suite (fixture files that did not travel fail by name), then pipellm_cuda_bench on the 8B shape
# (Q4_K_M) with the defaults and mmq's ablations (VARIANTS: batched decode), and gpt-oss-20b
# (MXFP4_MOE, n_embd 2880: mmq with a partial last K step; GPTOSS_FLAGS, e.g. --group-gptoss 0),
# prefill and decode.
# Usage (device machine; carry .carry/sysroot; leave tests/data/fixtures.tar.xz behind):
#   [VARIANTS="flags;flags"] [NCU=1 [NCU_FLAGS=...]] scripts/device-mmq.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
B=build-device
scripts/device-build.sh pipellm_gpu_tests pipellm_cuda_bench >"$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
(cd $B && timeout ${TEST_S:-300} ./tests/pipellm_gpu_tests --gtest_brief=1 >"$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"
grep -E "FAILED|tests ran|PASSED|mmq f16" "$OUT/gpu_tests.log" | grep -v "cannot open" | cut -c1-200 | head -60
echo "failures for files that did not travel: $(grep -cE "cannot open|No such file" "$OUT/gpu_tests.log")"
# The 8B shape under each variant (VARIANTS: bench flag sets separated by ';', the first the defaults).
IFS=';' read -ra VARIANTS <<<"${VARIANTS:- ;--mmq-f16 0;--mmq-f16-k-parts 2;--mmq-f16-k-parts 4}"
n=0
for v in "${VARIANTS[@]}"; do
  n=$((n + 1))
  timeout 150 $B/bench/pipellm_cuda_bench --preset llama3-8b --quant Q4_K_M --no-f16-cache --runs 2 --skip-depth \
    $v >"$OUT/bench-8b-$n.txt" 2>&1
  echo "bench 8B [$v] rc=$? $(since)"; grep -E "^model|^upload|^\| (pp|tg128 |batched)" "$OUT/bench-8b-$n.txt"
done
timeout 100 $B/bench/pipellm_cuda_bench --preset gpt-oss-20b --quant MXFP4_MOE --no-f16-cache --runs 2 --skip-depth \
  ${GPTOSS_FLAGS:-} >"$OUT/bench-gptoss.txt" 2>&1
echo "bench gpt-oss-20b ${GPTOSS_FLAGS:-} rc=$? $(since)"; grep -E "^\| (pp|tg128 |batched)" "$OUT/bench-gptoss.txt"
# With NCU=1: the first mmq launches of a 64-sequence decode step under ncu (occupancy, stalls).
if [ -n "${NCU:-}" ]; then
  timeout 150 ncu --clock-control none --profile-from-start off -k regex:mmq --launch-count 6 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats \
    $B/bench/pipellm_cuda_bench --preset llama3-8b --quant Q4_K_M --no-f16-cache --skip-depth --profile-batched 64 \
    ${NCU_FLAGS:-} >"$OUT/ncu-mmq.txt" 2>&1
  echo "ncu rc=$? $(since)"
  grep -E "mmq|Duration|Achieved Occupancy|Theoretical Occupancy|No Eligible|Warp Cycles Per Issued|Registers Per" \
    "$OUT/ncu-mmq.txt" | head -50
fi

#!/usr/bin/env bash
# One device call for mixture-of-experts speed (issues 15, 16): build (the CLI too, for a
# following `scripts/device-arch.sh bench` on the warm machine), the whole GPU suite (fixture files
# that did not travel fail by name), pipellm_cuda_bench on synthetic real-shape MoE models
# (MODELS: "preset:quant ...", default qwen3-30b-a3b Q4_K_M and gpt-oss-20b MXFP4_MOE; batched
# decode for the first only; no files to make, no llama.cpp: its figures need device-arch.sh
# bench), the first model's decode with the separate expert launches (--moe-fuse 0), its prefill
# and batches with the grouped expert products on f16 rows at every size (--mmq-f16-experts-from 0), and an ncu
# per-kernel summary of its decode steps (kernels told apart by grid size), whose sum beside
# tg128's step time says how much of a step is launch gaps.
# Usage (device machine; carry .carry/sysroot): [MODELS="..."] [STEPS=2] scripts/device-moe-perf.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
scripts/device-build.sh pipellm pipellm_gpu_tests pipellm_cuda_bench >"$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
B=build-device
(cd $B && timeout ${TEST_S:-240} ./tests/pipellm_gpu_tests --gtest_brief=1 >"$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"
grep -E "FAILED|tests ran|PASSED" "$OUT/gpu_tests.log" | cut -c1-200 | head -40
echo "failures for files that did not travel: $(grep -cE "cannot open|No such file" "$OUT/gpu_tests.log")"
MODELS=${MODELS:-"qwen3-30b-a3b:Q4_K_M gpt-oss-20b:MXFP4_MOE"}
F="--skip-depth"
for m in $MODELS; do
  p=${m%%:*} q=${m##*:}
  timeout 150 $B/bench/pipellm_cuda_bench --preset $p --quant $q --no-f16-cache --runs 2 $F >"$OUT/bench-$p.txt" 2>&1
  echo "bench $p $q rc=$? $(since)"; grep -E "^model|^upload|^\| " "$OUT/bench-$p.txt"
  F="--skip-depth --skip-batched"
done
m=${MODELS%% *}; p=${m%%:*} q=${m##*:}
timeout 100 $B/bench/pipellm_cuda_bench --preset $p --quant $q --no-f16-cache --runs 2 $F --moe-fuse 0 \
  >"$OUT/bench-$p-unfused.txt" 2>&1
echo "bench $p $q --moe-fuse 0 rc=$? $(since)"; grep -E "^\| tg128 " "$OUT/bench-$p-unfused.txt"
# The grouped expert products on f16 rows at every batch size (MmqTuning::f16_experts_from).
timeout 120 $B/bench/pipellm_cuda_bench --preset $p --quant $q --no-f16-cache --runs 2 --skip-depth --mmq-f16-experts-from 0 \
  >"$OUT/bench-$p-f16-experts.txt" 2>&1
echo "bench $p $q --mmq-f16-experts-from 0 rc=$? $(since)"; grep -E "^\| (pp512|tg128|batched)" "$OUT/bench-$p-f16-experts.txt"
timeout 150 ncu --clock-control none --profile-from-start off \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size --csv --page raw \
  $B/bench/pipellm_cuda_bench --preset $p --quant $q --no-f16-cache --skip-depth --skip-batched \
  --profile-steps ${STEPS:-2} >/tmp/ncu.csv 2>/tmp/ncu.err
echo "ncu $p rc=$? $(since)"; tail -2 /tmp/ncu.err
python3 bench/ncu_summary.py /tmp/ncu.csv >"$OUT/ncu-$p.txt" 2>&1; head -45 "$OUT/ncu-$p.txt"

#!/usr/bin/env bash
# One device call for issue 16's acceptance and this code's first GPU run: build; the GPU tests of
# the kernels written without a GPU (tensor-core attention for 256-wide heads and prompt-chunk
# blocks, the gated mat-vec for every activation, the flat mat-vec layout) and the qwen35/gemma4
# fixtures; then gemma4-31b and qwen3.6-35b-a3b (Q4_K_M, mkmodel files) side by side with
# llama-bench, each with PipeLLM's ablations ABLATE (';'-separated flag sets: the flat mat-vec,
# the CUDA-core attention); last, where the time is left, the per-kernel profiles of a gemma4 and a
# qwen3.6 decode step (scripts/device-profile.sh).
# Here first: `scripts/device-tree.sh keep fixtures-next` and move models/default.gguf aside (the
# 64 MiB upload limit); carry [".carry/sysroot", ".carry/llama-bin"] with the slim llama-bin of
# scripts/make-device-carry.sh swapped in (llama-bench and its libraries only).
# Usage (device machine): [MODELS="..."] [ABLATE="--flags;..."] scripts/device-issue16.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
llama_tools
B=build-device
scripts/device-build.sh pipellm pipellm_cuda_bench pipellm_gpu_tests >"$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
(cd $B && timeout ${TEST_S:-90} ./tests/pipellm_gpu_tests --gtest_brief=1 \
   --gtest_filter='Mmq*:CudaKernels.Attention*:PerType.Matvec*:Mxfp4Cuda.Matvec*:ArchOps.Attention*:Arch/CudaArchFixture.*' \
   >"$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"; grep -E "FAILED|tests ran|PASSED" "$OUT/gpu_tests.log" | cut -c1-200 | head -30
IFS=';' read -ra ABL <<<"${ABLATE:---matvec-flat 1;--attention-mma 0}"
for p in ${MODELS:-gemma4-31b qwen3.6-35b-a3b}; do
  m=$B/$p.gguf
  [ -f "$m" ] || timeout 120 $B/cli/pipellm mkmodel --preset $p "$m" >"$OUT/mkmodel-$p.log" 2>&1
  ls -la "$m" | cut -c1-120
  timeout 90 $B/bench/pipellm_cuda_bench -m "$m" --no-f16-cache --skip-depth --skip-batched --runs 2 \
    >"$OUT/pipellm-$p.txt" 2>&1
  echo "pipellm $p rc=$? $(since)"; grep -hE "^model|weights  |stage total|^\| (pp512|tg128 )" "$OUT/pipellm-$p.txt"
  if [ -x "$LLAMA_BIN/llama-bench" ]; then
    timeout 120 $LLAMA_BIN/llama-bench -m "$m" -ngl 99 -fa 1 -p 512 -n 128 -r 2 -o md >"$OUT/llama-$p.md" 2>&1
    echo "llama-bench $p rc=$? $(since)"; grep -E "^\|" "$OUT/llama-$p.md"
  fi
  n=0
  for f in "${ABL[@]}"; do
    n=$((n + 1))
    timeout 60 $B/bench/pipellm_cuda_bench -m "$m" --no-f16-cache --skip-depth --skip-batched --runs 1 $f \
      >"$OUT/pipellm-$p-ablation$n.txt" 2>&1
    echo "pipellm $p [$f] rc=$? $(since)"; grep -hE "^\| (pp512|tg128 )" "$OUT/pipellm-$p-ablation$n.txt"
  done
done
PROFILE_S=60 scripts/device-profile.sh gemma4-tg -m $B/gemma4-31b.gguf --no-f16-cache --profile-steps 2
PROFILE_S=45 scripts/device-profile.sh qwen36-tg -m $B/qwen3.6-35b-a3b.gguf --no-f16-cache --profile-steps 2

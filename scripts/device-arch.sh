#!/usr/bin/env bash
# Device calls for the architecture issues (15: gemma3/phi3/MoE/gpt-oss, 16: qwen35/gemma4).
# Here first: `scripts/device-tree.sh keep fixtures-arch fixtures-next` (the upload limit), then
# call the device with carry [".carry/sysroot"] (and ".carry/llama-bin", or ".carry/llama" with WITH_LLAMA=1):
#   scripts/device-arch.sh build    PipeLLM (+ llama.cpp in the background), the architecture GPU
#                                   tests (fixtures within their bounds, graph == eager, the ops)
#   scripts/device-arch.sh bench    real-shape MoE files (mkmodel presets MODELS, default
#                                   qwen3-30b-a3b gpt-oss-20b): pipellm bench --device cuda
#                                   (PIPELLM_FLAGS added) beside llama-bench (-r REPS, default 3)
#   scripts/device-arch.sh offload  issue 19: the HostExperts GPU tests, then qwen3-30b-a3b with every
#                                   routed expert in host memory: pipellm bench --cpu-moe beside
#                                   llama-bench -ncmoe 48 (same file, -t 16), and the host's read
#                                   bandwidth; NCPU (default 48) experts' layers on the CPU; then
#                                   with --expert-cache CACHE (default 8GiB): its hit rate and speed
#   scripts/device-arch.sh offload-dense  issue 19's dense split: pipellm_prefetch_bench at -ngl 16/24
#                                   memory with --cpu-rows CPU_ROWS, beside llama-bench -ngl 16,24
# Afterwards here: `scripts/device-tree.sh restore`. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
B=build-device
# llama.cpp: the prebuilt binaries when .carry/llama-bin travelled, else `build` built them here.
[ "${1:-}" = build ] || llama_tools
case ${1:-} in
build)
  [ -n "${WITH_LLAMA:-}" ] && llama_tools llama-bench llama-quantize
  scripts/device-build.sh pipellm pipellm_gpu_tests pipellm_prefetch_bench >"$OUT/build.log" 2>&1
  echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -30
  (cd $B && timeout 300 ./tests/pipellm_gpu_tests --gtest_brief=1 \
     --gtest_filter='Arch*:CudaArch*:HybridOps*:DeltaNet*:Moe*:LayerOps*:Mxfp4*:*Yarn*:*Window*:*Sink*' \
     >"$OUT/arch_gpu_tests.log" 2>&1)
  echo "arch gpu tests rc=$? $(since)"
  grep -E "FAILED|tests ran|PASSED|\] tiny|rel RMS" "$OUT/arch_gpu_tests.log" | cut -c1-200 | head -60
  wait; echo "llama.cpp: $(ls "${LLAMA_BIN:-none}" 2>/dev/null | tr '\n' ' ') $(since)" ;;
bench)
  # Real vocabularies where one travels; other presets (qwen3.6-35b-a3b, gemma4-31b: issue 16) get
  # mkmodel's synthetic one of their size.
  declare -A VOCAB=([qwen3-30b-a3b]=$(vocab qwen3) [gpt-oss-20b]=$(vocab gptoss))
  for p in ${MODELS:-qwen3-30b-a3b gpt-oss-20b}; do
    m=$B/$p.gguf
    [ -f "$m" ] || $B/cli/pipellm mkmodel --preset $p ${VOCAB[$p]:+--vocab "${VOCAB[$p]}"} "$m" \
      >"$OUT/mkmodel-$p.log" 2>&1
    ls -la "$m"
    timeout 200 $B/cli/pipellm bench -m "$m" --device cuda --json ${PIPELLM_FLAGS:-} >"$OUT/pipellm-$p.json" \
      2>"$OUT/pipellm-$p.log"
    echo "pipellm $p rc=$? $(since)"; tail -c 600 "$OUT/pipellm-$p.json"
    if [ -x $LLAMA_BIN/llama-bench ]; then
      timeout 200 $LLAMA_BIN/llama-bench -m "$m" -ngl 99 -fa 1 -p 512 -n 128 -r ${REPS:-3} -o json \
        >"$OUT/llama-$p.json" 2>"$OUT/llama-$p.log"
      echo "llama-bench $p rc=$? $(since)"; grep -E '"(n_prompt|n_gen|avg_ts)"' "$OUT/llama-$p.json" | head
    fi
  done ;;
offload)
  (cd $B && timeout 240 ./tests/pipellm_gpu_tests --gtest_brief=1 --gtest_filter='*HostExperts*:AutoFit*:DeviceMemory*' \
     >"$OUT/host_experts_tests.log" 2>&1)
  echo "host experts gpu tests rc=$? $(since)"; grep -E "FAILED|tests ran|PASSED|Failure" "$OUT/host_experts_tests.log" | head -30
  p=qwen3-30b-a3b; m=$B/$p.gguf; n=${NCPU:-48}
  [ -f "$m" ] || $B/cli/pipellm mkmodel --preset $p --vocab "$(vocab qwen3)" "$m" >"$OUT/mkmodel-$p.log" 2>&1
  lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-300 >"$OUT/cpu.txt"; head -2 "$OUT/cpu.txt"
  timeout 240 $B/cli/pipellm bench -m "$m" --device cuda --n-cpu-moe $n -t 16 --skip-depth --skip-batched --reps 2 \
    >"$OUT/pipellm-$p-ncmoe$n.txt" 2>&1
  echo "pipellm $p --n-cpu-moe $n rc=$? $(since)"; grep -vE "^\s*$" "$OUT/pipellm-$p-ncmoe$n.txt" | tail -16
  # The hot-expert cache (more VRAM than llama.cpp's -ncmoe: not an equal-memory figure).
  timeout 200 $B/cli/pipellm bench -m "$m" --device cuda --n-cpu-moe $n --expert-cache ${CACHE:-8GiB} -t 16 \
    --skip-depth --skip-batched --reps 2 >"$OUT/pipellm-$p-ncmoe$n-cache.txt" 2>&1
  echo "pipellm $p --n-cpu-moe $n --expert-cache rc=$? $(since)"
  grep -E "tg128|pp512|expert cache" "$OUT/pipellm-$p-ncmoe$n-cache.txt" | tail -8
  if [ -x $LLAMA_BIN/llama-bench ]; then
    timeout 240 $LLAMA_BIN/llama-bench -m "$m" -ngl 99 -fa 1 -ncmoe $n -t 16 -p 512 -n 128 -r 2 -o json \
      >"$OUT/llama-$p-ncmoe$n.json" 2>"$OUT/llama-$p-ncmoe$n.log"
    echo "llama-bench $p -ncmoe $n rc=$? $(since)"; grep -E '"(n_prompt|n_gen|avg_ts)"' "$OUT/llama-$p-ncmoe$n.json" | head
  fi ;;
offload-dense)
  # Issue 19's dense split: the 8B Q4_K_M shape with llama.cpp's -ngl 16 / -ngl 24 weight memory
  # (2.2 / 3.3 GB), streamed as before and with CPU_ROWS of each streamed matrix on the CPU,
  # beside llama-bench -ngl 16/24 on the same file (-t 16). Needs pipellm_prefetch_bench built.
  (cd $B && timeout 200 ./tests/pipellm_gpu_tests --gtest_brief=1 --gtest_filter='*HostRows*:*WeightStreamer*:*Streamed*' \
     >"$OUT/host_rows_tests.log" 2>&1)
  echo "host rows gpu tests rc=$? $(since)"; grep -E "FAILED|tests ran|PASSED|Failure" "$OUT/host_rows_tests.log" | head -20
  m=$B/l8-q4km.gguf
  [ -f $m ] || $B/cli/pipellm mkmodel --preset llama3-8b --quant Q4_K_M --vocab "$(vocab llama3)" $m \
    >"$OUT/mkmodel-l8.log" 2>&1
  timeout 300 $B/bench/pipellm_prefetch_bench -m $m --budgets 2200MB,3300MB --runs 2 --skip-ablation --skip-resident \
    --cpu-rows ${CPU_ROWS:-0.3,0.5,auto} --threads 16 >"$OUT/prefetch-cpu-rows.txt" 2>&1
  echo "prefetch bench rc=$? $(since)"; grep -E "^\|" "$OUT/prefetch-cpu-rows.txt" | head -12
  if [ -x $LLAMA_BIN/llama-bench ]; then
    timeout 200 $LLAMA_BIN/llama-bench -m $m -ngl 16,24 -fa 1 -t 16 -p 512 -n 32 -r 2 -o json \
      >"$OUT/llama-ngl.json" 2>"$OUT/llama-ngl.log"
    echo "llama-bench -ngl 16,24 rc=$? $(since)"; grep -E '"(n_gpu_layers|n_prompt|n_gen|avg_ts)"' "$OUT/llama-ngl.json" | head -16
  fi ;;
*) echo "usage: $0 build|bench|offload|offload-dense" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Issue 14's device calls. `build`: llama.cpp (WITH_LLAMA=1 without .carry/llama-bin: from .carry/llama, in the
# background) and PipeLLM,
# the 8B Q4_K_M model, the GPU tests. `bench`: bench/serving_bench.sh. Logs under $OUT.
# Usage (device machine, carry .carry): scripts/device-serving.sh build|bench [phases...]
# (SKIP_TESTS=1: build without running the GPU tests; GPU_FILTER=F: only those; VOCAB=FILE: the llama3 vocabulary, when the
# fixtures did not travel)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
# Random weights with the llama3 tokenizer; --text-head: its text is plain ASCII, which
# llama-server's output check accepts (random byte tokens make it end streams with an error).
M=build-device/l8-q4km-text.gguf
case $1 in
build)
  [ -n "${WITH_LLAMA:-}" ] && llama_tools llama-server llama-batched-bench
  scripts/device-build.sh pipellm pipellm_gpu_tests pipellm-stage pipellm-coordinator pipellm_nccl_transport_test \
    >"$OUT/build.log" 2>&1
  echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -30
  # A few fixture files beside a left-out archive (paths under testdata/), when the upload
  # cannot hold the whole archive.
  if [ -f .device-mini.tar.xz ]; then
    chmod -R u+w build-device/testdata 2>/dev/null; tar xJf .device-mini.tar.xz -C build-device/testdata
  fi
  [ -f $M ] || build-device/cli/pipellm mkmodel --preset llama3-8b --quant Q4_K_M \
    --vocab ${VOCAB:-$(vocab llama3)} --text-head $M >"$OUT/mkmodel.log" 2>&1 &
  if [ -n "${GPU_FILTER:-}" ]; then
    (cd build-device && timeout 300 ./tests/pipellm_gpu_tests --gtest_brief=1 --gtest_filter="$GPU_FILTER" \
      >"$OUT/gpu_tests.log" 2>&1)
    echo "gpu tests ($GPU_FILTER) rc=$? $(since)"
  elif [ -z "${SKIP_TESTS:-}" ]; then
    (cd build-device && timeout 300 ./tests/pipellm_gpu_tests --gtest_brief=1 >"$OUT/gpu_tests.log" 2>&1)
    echo "gpu tests rc=$? $(since)"
    (cd build-device && timeout 200 ctest -R "^gpu\." --output-on-failure >"$OUT/served_test.log" 2>&1)
    echo "served/ipc test rc=$? $(since)"
  fi
  wait
  echo "llama.cpp: $(ls "${LLAMA_BIN:-none}" 2>/dev/null | tr '\n' ' ') $(since)"; tail -3 "$OUT/llama-build.log" 2>/dev/null
  grep -E "FAILED|tests ran|PASSED|SKIPPED|chi2|\] " "$OUT/gpu_tests.log" | cut -c1-200 | head -40
  tail -15 "$OUT/served_test.log"; ls -la $M ;;
bench)
  shift
  llama_tools  # LLAMA_BIN for bench/serving_bench.sh (built by `build` when not prebuilt)
  timeout 560 bench/serving_bench.sh $M "$OUT" "$@"
  echo "bench $(since)" ;;
esac

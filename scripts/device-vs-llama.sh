#!/usr/bin/env bash
# Issues 14, 17 and 18 in one device call: PipeLLM and llama.cpp on the same machine and the same
# llama3-8b-shape Q4_K_M file (mkmodel, llama3 vocabulary): pp512, tg128 at depth 0 / 4096 / 32768,
# batched decode of 16 and 64 sequences, and each engine's device memory at context 4096
# (PipeLLM: the stage's own report; llama.cpp: its CUDA0 buffer sizes from llama-server's log);
# then PipeLLM's ablation ABLATE (bench flags; default: mmq's f16 variant with 4 K parts a block)
# and the GPU kernel tests that need no fixture files (GPU_FILTER), so that the call needs no
# fixture archive in the upload.
# llama.cpp: device-env.sh's llama_tools (prebuilt in .carry/llama-bin, else built here from
# .carry/llama in the background while PipeLLM builds).
# Usage (device machine; carry .carry/sysroot, .carry/llama-bin or .carry/llama, and .carry/vocab
# when the fixtures do not travel): [VOCAB=F] [ABLATE="--flags"] scripts/device-vs-llama.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
B=build-device M=build-device/l8-q4km.gguf
VOCAB=${VOCAB:-$(vocab llama3)}
ABLATE=${ABLATE:---mmq-f16-k-parts 4}
GPU_FILTER=${GPU_FILTER:-Mmq*:CudaKernels*:CudaKvQuant*:PerType*:ArchOps*:HybridOps*:GpuSampler*:Mxfp4Cuda*:MoeCacheKernels*:RepackForDevice*}
llama_tools llama-bench llama-batched-bench llama-server
L=$LLAMA_BIN
scripts/device-build.sh pipellm pipellm_cuda_bench pipellm_gpu_tests >"$OUT/build.log" 2>&1
echo "build rc=$? $(since)"; grep -E "error" -A3 "$OUT/build.log" | head -20
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$OUT/build.log"
mk=0; [ -f $M ] || { $B/cli/pipellm mkmodel --preset llama3-8b --quant Q4_K_M --vocab "$VOCAB" $M >>"$OUT/build.log" 2>&1 & mk=$!; }
(cd $B && timeout 120 ./tests/pipellm_gpu_tests --gtest_brief=1 --gtest_filter="$GPU_FILTER" >"$OUT/gpu_tests.log" 2>&1)
echo "gpu tests rc=$? $(since)"
[ $mk = 0 ] || wait $mk; ls -la $M >>"$OUT/build.log"
P="$B/bench/pipellm_cuda_bench -m $M --no-f16-cache"
timeout 150 $P --runs 3 >"$OUT/pipellm.txt" 2>&1; echo "pipellm rc=$? $(since)"
wait; echo "llama.cpp: $(ls $L 2>/dev/null | tr '\n' ' ') $(since)"; [ -f "$OUT/llama-build.log" ] && tail -2 "$OUT/llama-build.log"
if [ -x $L/llama-bench ]; then
  timeout 150 $L/llama-bench -m $M -ngl 99 -fa 1 -p 512 -n 128 -d 0,4096,32768 -r 2 -o md >"$OUT/llama-bench.md" 2>&1
  echo "llama-bench rc=$? $(since)"
  timeout 100 $L/llama-batched-bench -m $M -ngl 99 -fa on -c 20480 -npp 128 -ntg 128 -npl 16,64 \
    >"$OUT/llama-batched.txt" 2>&1
  echo "llama-batched-bench rc=$? $(since)"
  # Device memory at context 4096, one sequence: the buffers llama.cpp allocates, as it logs them.
  # (nvidia-smi's line goes to its own file: the server's log is not opened for appending.)
  $L/llama-server -m $M -ngl 99 -fa on -c 4096 -np 1 --port 8093 -lv 4 >"$OUT/llama-mem.log" 2>&1 &
  pid=$!; for _ in $(seq 1 120); do grep -qE "server is listening|listening on" "$OUT/llama-mem.log" && break; sleep 0.5; done
  nvidia-smi --query-gpu=memory.used --format=csv,noheader >"$OUT/llama-mem-smi.txt"; kill $pid; wait $pid 2>/dev/null
fi
timeout 90 $P --runs 2 --skip-depth $ABLATE >"$OUT/pipellm-ablation.txt" 2>&1; echo "ablation ($ABLATE) rc=$? $(since)"
timeout 80 $P --runs 2 --depth 32768 --skip-batched >"$OUT/pipellm-d32k.txt" 2>&1; echo "pipellm d32768 rc=$? $(since)"
# The CUDA-core attention split (the tensor-core one is the default) at depth 32768, its baseline.
timeout 80 $P --runs 2 --depth 32768 --skip-batched --attention-mma 0 >"$OUT/pipellm-cudacores-d32768.txt" 2>&1
echo "pipellm CUDA-core attention d32768 rc=$? $(since)"
echo "==== summary ($(since))"; git log --oneline -1
grep -E "FAILED|tests ran|PASSED" "$OUT/gpu_tests.log" | cut -c1-160 | head -20
for f in pipellm pipellm-ablation pipellm-d32k pipellm-cudacores-d32768; do
  echo "== $f"; grep -hE "^\| |stage total|weights  |KV cache  |scratch  |^upload" "$OUT/$f.txt"
done
cat "$OUT/llama-bench.md" 2>/dev/null | grep -E "^\|"
grep -E "^\|" "$OUT/llama-batched.txt" 2>/dev/null
grep -E "CUDA0 (model|KV|compute) buffer size" "$OUT/llama-mem.log" 2>/dev/null
echo "llama-server at context 4096, nvidia-smi memory.used: $(cat "$OUT/llama-mem-smi.txt" 2>/dev/null)"

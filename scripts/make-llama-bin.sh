#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-batched-bench and llama-server for sm_90 on this machine
# (no GPU needed, nvcc only; libcuda.so.1, the driver, is left for the device to resolve) from .carry/llama/llama-trim.tar.xz and puts them, with their shared
# libraries, stripped, in .carry/llama-bin/bin: the device call then spends no time building
# llama.cpp (scripts/device-vs-llama.sh uses them when present). Takes about an hour on 2 cores.
# Usage: scripts/make-llama-bin.sh [BUILD_DIR]   (default /tmp/llama-build; kept for reruns)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-/tmp/llama-build}
mkdir -p "$B"
[ -d "$B/llama.cpp" ] || tar xJf .carry/llama/llama-trim.tar.xz -C "$B"
cmake -S "$B/llama.cpp" -B "$B/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
  -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined \
  -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--allow-shlib-undefined >"$B/cmake.log"
nice ninja -C "$B/build" llama-bench llama-batched-bench llama-server
rm -rf .carry/llama-bin && mkdir -p .carry/llama-bin/bin
cp -L "$B"/build/bin/llama-bench "$B"/build/bin/llama-batched-bench "$B"/build/bin/llama-server .carry/llama-bin/bin/
for so in "$B"/build/bin/lib*.so*; do cp -P "$so" .carry/llama-bin/bin/; done
strip --strip-unneeded .carry/llama-bin/bin/llama-* $(find .carry/llama-bin/bin -name 'lib*.so*' -type f)
du -sh .carry/llama-bin

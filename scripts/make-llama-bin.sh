#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-batched-bench, llama-server and llama-quantize for sm_90 here
# (no GPU needed, nvcc only; libcuda.so.1, the driver, is left for the device to resolve) from
# .carry/llama/llama-trim.tar.xz and packs them with their shared libraries, stripped, in
# .carry/llama-bin/llama-bin.tar.xz: the device call then spends no time building llama.cpp
# (scripts/device-env.sh's llama_tools uses them when present). Takes about half an hour on 2 cores.
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
nice ninja -C "$B/build" llama-bench llama-batched-bench llama-server llama-quantize
# One file per library under its soname (links may not travel), xz-compressed (the upload is
# limited to 64 MiB: about 42 MB).
S=$(mktemp -d)
mkdir "$S/lb"
for f in llama-bench llama-batched-bench llama-server llama-quantize; do
  cp -L "$B/build/bin/$f" "$S/lb/"
  for so in $(ldd "$B/build/bin/$f" 2>/dev/null | awk -v d="$B/build/bin/" 'index($3, d) == 1 {print $1}'); do
    cp -L "$B/build/bin/$so" "$S/lb/$so"
  done
done
strip --strip-unneeded "$S"/lb/*
rm -rf .carry/llama-bin && mkdir -p .carry/llama-bin
tar cJf .carry/llama-bin/llama-bin.tar.xz -C "$S" lb
rm -rf "$S"
ls -la .carry/llama-bin

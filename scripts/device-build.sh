#!/usr/bin/env bash
# Builds PipeLLM on the GPU machine (no gRPC/yaml-cpp/gtest there): the small dependencies
# travel as Debian packages unpacked into .carry/sysroot (see scripts/make-device-sysroot.sh).
# Usage: scripts/device-build.sh [ninja targets...]   (build dir: build-device)
set -euo pipefail
cd "$(dirname "$0")/.."
S="$PWD/.carry/sysroot"
export CMAKE_PREFIX_PATH="$S/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$S/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DPIPELLM_ENABLE_COORDINATOR=OFF >/dev/null
ninja -C build-device -j16 "$@"

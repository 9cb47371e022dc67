#!/usr/bin/env bash
# Builds PipeLLM on the GPU machine (no gRPC/yaml-cpp/gtest there): the small dependencies
# travel as Debian packages unpacked into .carry/sysroot (see scripts/make-device-sysroot.sh).
# The coordinator is built with the HTTP (OpenAI) front door only, since there is no gRPC.
# Usage: scripts/device-build.sh [ninja targets...]   (build dir: build-device)
set -euo pipefail
cd "$(dirname "$0")/.."
S="$PWD/.carry/sysroot"
export CMAKE_PREFIX_PATH="$S/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# cpp-httplib is found by pkg-config (its .pc in the sysroot is relocatable: ${pcfiledir}).
export PKG_CONFIG_PATH="$S/usr/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$S/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p build-device
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DPIPELLM_ENABLE_COORDINATOR=ON >build-device/cmake.log ||
  { cat build-device/cmake.log; exit 1; }
grep -E "^-- PipeLLM: (coordinator|HTTP)" build-device/cmake.log || true
ninja -C build-device -j16 "$@"

#!/usr/bin/env bash
# Configures and builds PipeLLM into build/ (incremental: fast when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release)
command -v ccache >/dev/null && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
[ -f build/build.ninja ] || cmake -S . -B build "${args[@]}" "$@" >/dev/null
jobs=$(nproc)
cmake --build build -j "$jobs"

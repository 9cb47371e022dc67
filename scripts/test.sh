#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test (CTest, including the
# 60 s GGUF fuzzer). GPU tests skip with a message where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 1200

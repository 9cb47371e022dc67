#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test (CTest, including the
# multi-rank MPI tests and the 60 s GGUF fuzzer). GPU tests skip with a message without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd build
set +e
ctest --output-on-failure -j "$(nproc)" --timeout 1200 2>&1 | tee ctest.log
rc=${PIPESTATUS[0]}
set -e
# CTest lists skipped tests after its summary; repeat the summary so it is the last line.
grep -E '^[0-9]+% tests passed' ctest.log | tail -n 1
exit "$rc"

#!/usr/bin/env bash
# The main job: installs what is missing, builds, and generates text.
#   scripts/run.sh                      -> generate from the shipped default model
#   scripts/run.sh -p "Once upon" -n 64 -> any `pipellm generate` options
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >/dev/null
[ $# -eq 0 ] && set -- -p "The jury said" -n 48
exec build/cli/pipellm generate "$@"

#!/usr/bin/env bash
# The main job: installs what is missing, builds, and generates text.
#   scripts/run.sh                      -> generate from the shipped default model
#   scripts/run.sh -p "Once upon" -n 64 -> any `pipellm generate` options
set -euo pipefail
cd "$(dirname "$0")/.."
# Set-up output goes to stderr (stdout is the generated text). The first build takes minutes:
# its progress is shown; later (incremental) builds are quiet unless they fail.
scripts/install-deps.sh >&2
if [ -x build/cli/pipellm ]; then
  log=$(mktemp)
  scripts/build.sh >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
else
  echo "run.sh: first build into build/ (several minutes on a small machine; progress below)" >&2
  scripts/build.sh >&2
fi
[ $# -eq 0 ] && set -- -p "The jury said" -n 48
exec build/cli/pipellm generate "$@"

#!/usr/bin/env bash
# One machine: as many ranks as the config has stages.
#   deploy/launch-local.sh configs/cpu-2rank.yaml --prompt "The jury said" -n 32
# Prints the plan first; any further arguments go to pipellm-stage (see pipellm-stage --help).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[[ $# -ge 1 ]] || { echo "usage: $0 CONFIG.yaml [pipellm-stage options]" >&2; exit 2; }
config="$1"; shift
need_binaries
n="$(stage_count "$config")"
# shellcheck disable=SC2046
exec mpirun $(mpirun_flags "$n") -np "$n" "$STAGE_BIN" --config "$config" "$@"

#!/usr/bin/env bash
# Several machines: ranks fill the hostfile's slots in order, so rank r (stage r) lands on the
# host the config's stage r names. Every host needs the same binary path and model path, and
# passwordless ssh from this one.
#   deploy/launch-multinode.sh configs/multinode.yaml deploy/hostfile.example --prompt "..."
# NCCL settings pass through (-x): e.g. NCCL_SOCKET_IFNAME=eth0 NCCL_IB_DISABLE=1.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[[ $# -ge 2 ]] || { echo "usage: $0 CONFIG.yaml HOSTFILE [pipellm-stage options]" >&2; exit 2; }
config="$1"; hostfile="$2"; shift 2
need_binaries
n="$(stage_count "$config")"
env_flags=()
for v in $(env | awk -F= '/^(NCCL_|CUDA_VISIBLE_DEVICES|OMP_)/ {print $1}'); do env_flags+=(-x "$v"); done
flags=()
[[ "$(id -u)" == 0 ]] && flags+=(--allow-run-as-root)
exec mpirun "${flags[@]}" --hostfile "$hostfile" --map-by slot -np "$n" "${env_flags[@]}" \
  "$STAGE_BIN" --config "$config" "$@"

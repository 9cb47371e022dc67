# Shared by the launch scripts: binaries, the number of stages of a config, mpirun flags.
# PIPELLM_BUILD (default build/), PIPELLM_STAGE_BIN and PIPELLM_BIN override the binaries.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${PIPELLM_BUILD:-$ROOT/build}"
STAGE_BIN="${PIPELLM_STAGE_BIN:-$BUILD/stage_worker/pipellm-stage}"
CLI_BIN="${PIPELLM_BIN:-$BUILD/cli/pipellm}"

need_binaries() {
  for b in "$STAGE_BIN" "$CLI_BIN"; do
    [[ -x "$b" ]] || { echo "deploy: $b not found (build with scripts/build.sh, MPI installed)" >&2; exit 1; }
  done
}

# Number of stages (= ranks) of a config, from `pipellm plan`'s summary line.
stage_count() {
  local n
  n="$("$CLI_BIN" plan --config "$1" | awk '/^pipeline:/ {print $2; exit}')" || return 1
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "deploy: cannot read the stage count of $1" >&2; return 1; }
  echo "$n"
}

# mpirun flags every launch needs: root (containers, CI), more ranks than local cores, and the
# link secret of a coordinator in attach mode (stages serving it prove they are the head with it).
mpirun_flags() {
  local ranks="$1" flags=()
  [[ "$(id -u)" == 0 ]] && flags+=(--allow-run-as-root)
  [[ -n "${PIPELLM_LINK_SECRET:-}" ]] && flags+=(-x PIPELLM_LINK_SECRET)
  (( ranks > $(nproc) )) && flags+=(--oversubscribe)
  echo "${flags[@]}"
}

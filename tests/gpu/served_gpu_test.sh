#!/usr/bin/env bash
# On a GPU: (1) the coordinator serving one GPU in-process (--device cuda, HTTP) gives the same
# greedy text as `pipellm generate --device cuda` for the default model and fixture models;
# (2) two pipellm-stage ranks sharing the GPU (CUDA IPC transport) give the ids of one rank, and
# so do two host-staged ranks (transport: mpi). Skips (exit 77) without a GPU or MPI.
# Usage: served_gpu_test.sh BUILD_DIR MODEL.gguf [MODEL.gguf...]
set -euo pipefail
build=$1; shift
pipellm=$build/cli/pipellm coord=$build/coordinator/pipellm-coordinator stage=$build/stage_worker/pipellm-stage
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 || { echo "SKIP: no CUDA device present"; exit 77; }
source "$(dirname "$0")/../serving/coordinator_lib.sh"
json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]), end='')" "$@"; }

prompts=("The jury said" "It was a" "In the morning the city")
for model in "$@"; do
  [ -x "$coord" ] || { echo "no coordinator built: skipping the served part"; break; }
  start_http --model "$model" --device cuda --ctx 512 --slots 4 --listen off
  for p in "${prompts[@]}"; do
    "$pipellm" generate -m "$model" --device cuda --ctx 512 -p "$p" -n 32 --temp 0 --ignore-eos --json \
      >"$dir/gen.json" 2>/dev/null || fail "pipellm generate ($model)"
    python3 - "$http" "$p" >"$dir/served.json" <<'PY' || fail "request ($model, $p)"
import json, sys, urllib.request
body = json.dumps({"prompt": sys.argv[2], "max_tokens": 32, "temperature": 0, "ignore_eos": True}).encode()
req = urllib.request.Request(sys.argv[1] + "/v1/completions", body, {"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=60).read().decode())
PY
    want=$(json_field "$dir/gen.json" "d['text']") got=$(json_field "$dir/served.json" "d['choices'][0]['text']")
    [ "$want" = "$got" ] || fail "$model, '$p': served [$got] vs generate [$want]"
    echo "same: $(basename "$model"): $p"
  done
  stop_coordinator
done

command -v mpirun >/dev/null && [ -x "$stage" ] || { echo "SKIP: no mpirun or pipellm-stage"; exit 77; }
model=$(realpath "$1")
write_config() {  # NAME RANKS TRANSPORT
  { echo "model: $model"; echo "context_length: 512"; echo "max_sequences: 4"; echo "micro_batches: $2"
    echo "max_batch_tokens: 64"; echo "prefill_chunk: 16"; echo "transport: $3"; echo "stages:"
    for _ in $(seq 1 "$2"); do echo "  - device: cuda:0"; done; } >"$dir/$1.yaml"
}
write_config one 1 auto; write_config ipc 2 auto; write_config mpi 2 mpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
printf '%s\n' '{"tokens": [1, 5, 9, 200, 31], "max_tokens": 24}' \
  '{"tokens": [1, 77, 3], "max_tokens": 24, "temperature": 0.8, "top_k": 20, "repeat_penalty": 1.2, "seed": 3}' \
  '{"tokens": [1, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317], "max_tokens": 24}' \
  >"$dir/requests.jsonl"
for c in one ipc mpi; do
  np=$([ "$c" = one ] && echo 1 || echo 2)
  timeout 120 mpirun -np "$np" --oversubscribe "$stage" --config "$dir/$c.yaml" --requests "$dir/requests.jsonl" \
    --ignore-eos --quiet --json "$dir/$c.json" >"$dir/log" 2>&1 || fail "mpirun ($c)"
  json_field "$dir/$c.json" "[r['tokens'] for r in d['requests']]" >"$dir/$c.ids"
  echo "$c ($(json_field "$dir/$c.json" "d['transport']")): $(cut -c1-80 "$dir/$c.ids")"
done
cmp -s "$dir/one.ids" "$dir/ipc.ids" || fail "two ranks over CUDA IPC differ from one rank"
cmp -s "$dir/one.ids" "$dir/mpi.ids" || fail "two host-staged ranks differ from one rank"
[ "$(json_field "$dir/ipc.json" "d['transport']")" = ipc ] || fail "the two-rank run did not use the IPC transport"
echo "PASS"

#!/usr/bin/env bash
# Pipeline on one GPU (issue 7's device bench): the same model as 1 stage and as 2 ranks sharing
# the GPU with the host-staged MPI transport (NCCL refuses two ranks on one GPU). Prints the
# per-token overhead of the hop and aggregate throughput with several sequences in flight.
# Run on the GPU machine after scripts/device-build.sh pipellm pipellm-stage.
# Usage: bench/pipeline_gpu_bench.sh MODEL.gguf [OUT_DIR]
set -euo pipefail
model=$(readlink -f "$1")
out=${2:-/tmp/pipeline-bench}
mkdir -p "$out"
stage=build-device/stage_worker/pipellm-stage
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
write_config() {  # ranks -> config file
  local f="$out/gpu-$1rank.yaml"
  {
    echo "model: $model"
    echo "context_length: 2048"
    echo "max_sequences: 16"
    echo "micro_batches: $1"
    echo "max_batch_tokens: 512"
    echo "prefill_chunk: 512"
    echo "kv_cache_type: f16"
    echo "transport: mpi"
    echo "stages:"
    for _ in $(seq "$1"); do echo "  - device: cuda:0"; echo "    memory: 30GiB"; done
  } >"$f"
  echo "$f"
}
python3 - "$out/requests.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(16):
        f.write(json.dumps({"prompt": f"Request {i}: the quick brown fox jumps over the lazy dog", "max_tokens": 64}) + "\n")
PY
for ranks in 1 2; do
  cfg=$(write_config "$ranks")
  echo "== $ranks rank(s), one sequence, 128 tokens"
  mpirun -np "$ranks" --oversubscribe "$stage" --config "$cfg" --prompt "The jury said" -n 128 --ignore-eos \
    --temp 0 --json "$out/single-$ranks.json" 2>&1 | tail -n 3
  echo "== $ranks rank(s), 16 sequences x 64 tokens"
  mpirun -np "$ranks" --oversubscribe "$stage" --config "$cfg" --requests "$out/requests.jsonl" --ignore-eos \
    --temp 0 --json "$out/batch-$ranks.json" 2>&1 | tail -n 3
done

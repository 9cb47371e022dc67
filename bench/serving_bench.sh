#!/usr/bin/env bash
# Served decode on the GPU machine, PipeLLM against llama-server on the same file and GPU, with
# the same OpenAI HTTP load generator (bench/http_load.py): streaming completions, 100-word
# prompts, 128 generated tokens, ignore_eos; concurrency 1 / 16 / 64. Also PipeLLM's own engine
# bench (tg128) and the served single stream with two ranks sharing the GPU (CUDA IPC).
# Needs: build-device (scripts/device-build.sh pipellm pipellm-coordinator pipellm-stage) and
# llama-server in $LLAMA_BIN. Usage: bench/serving_bench.sh MODEL.gguf OUT_DIR [phases...]
# phases: engine engine-nocopy engine-nommq pipellm ipc llama (default: engine pipellm ipc llama)
# CHAT=1: the pipellm and llama phases also run conversations of 3 turns (--turns 3: each turn
# resends the history; TTFT p50 per turn shows what the servers' prompt caches save).
set -uo pipefail
model=$(readlink -f "$1"); out=$2; shift 2
phases=${*:-engine pipellm ipc llama}
mkdir -p "$out"
B=build-device
LLAMA_BIN=${LLAMA_BIN:-build-llama/bin}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SLOTS=64 CTX=1024   # llama-server -np 64 -c 65536: the same 1024 positions per sequence
load() {  # LABEL URL CONCURRENCY
  python3 bench/http_load.py --url "$2" --concurrency "$3" --prompt-words 100 --max-tokens 128 --label "$1" \
    --json "$out/$1.json" --timeout 600 2>&1 | tee "$out/$1.txt"
}
load_chat() {  # LABEL URL: 3-turn conversations at 1 and 16 streams (about 800 of the 1024 positions)
  [ -n "${CHAT:-}" ] || return 0
  python3 bench/http_load.py --url "$2" --concurrency 1,16 --turns 3 --prompt-words 100 --max-tokens 128 \
    --label "$1-chat" --json "$out/$1-chat.json" --timeout 600 2>&1 | tee "$out/$1-chat.txt"
}
wait_http() {  # URL PID
  for _ in $(seq 1 1200); do
    curl -sf "$1/health" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}
gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader; }
for phase in $phases; do
  case $phase in
  engine)
    $B/cli/pipellm bench --device cuda -m "$model" --reps 3 --skip-depth 2>&1 | tee "$out/engine.txt" ;;
  engine-nocopy)  # no f16 copies: prefill and batches dequantize each matrix per product (the server's path)
    $B/cli/pipellm bench --device cuda -m "$model" --reps 3 --skip-depth --no-f16-cache 2>&1 | tee "$out/engine-nocopy.txt" ;;
  engine-nommq)  # no f16 copies and no tensor-core product on the quantized blocks (the mat-vec, then cuBLAS)
    $B/cli/pipellm bench --device cuda -m "$model" --reps 3 --skip-depth --no-f16-cache --mmq-max-rows 0 2>&1 | tee "$out/engine-nommq.txt" ;;
  pipellm)
    $B/coordinator/pipellm-coordinator --model "$model" --device cuda --slots $SLOTS --ctx $CTX --listen off \
      --max-queue 256 --http-listen 127.0.0.1:8090 >"$out/pipellm-server.log" 2>&1 &
    pid=$!
    if wait_http http://127.0.0.1:8090 $pid; then
      echo "pipellm serving, GPU memory used: $(gpu_mem)" | tee "$out/pipellm-mem.txt"
      load pipellm-c1 http://127.0.0.1:8090 1
      # The head's own step time per token (compute, sampling, token fetch) against the gaps.
      curl -s http://127.0.0.1:8090/metrics | grep -E "^pipellm_stage_" | tee "$out/pipellm-c1-metrics.txt"
      load pipellm http://127.0.0.1:8090 16,64
      load_chat pipellm http://127.0.0.1:8090
      echo "after load, GPU memory used: $(gpu_mem)" | tee -a "$out/pipellm-mem.txt"
    else
      echo "pipellm server did not start"; tail -20 "$out/pipellm-server.log"
    fi
    kill $pid; wait $pid 2>/dev/null ;;
  ipc)
    { echo "model: $model"; echo "context_length: $CTX"; echo "max_sequences: $SLOTS"; echo "micro_batches: 2"
      echo "max_batch_tokens: 512"; echo "prefill_chunk: 256"; echo "transport: auto"; echo "stages:"
      echo "  - device: cuda:0"; echo "  - device: cuda:0"; } >"$out/ipc2.yaml"
    $B/coordinator/pipellm-coordinator --config "$out/ipc2.yaml" --listen off --http-listen 127.0.0.1:8091 \
      --mpirun-arg=--oversubscribe --max-queue 256 >"$out/ipc-server.log" 2>&1 &
    pid=$!
    if wait_http http://127.0.0.1:8091 $pid; then
      load pipellm-ipc2 http://127.0.0.1:8091 1,16
    else
      echo "2-rank server did not start"; tail -20 "$out/ipc-server.log"
    fi
    kill $pid; wait $pid 2>/dev/null ;;
  llama)
    $LLAMA_BIN/llama-server -m "$model" -ngl 99 -fa on -np $SLOTS -c $((SLOTS * CTX)) --host 127.0.0.1 --port 8092 \
      >"$out/llama-server.log" 2>&1 &
    pid=$!
    if wait_http http://127.0.0.1:8092 $pid; then
      echo "llama-server serving, GPU memory used: $(gpu_mem)" | tee "$out/llama-mem.txt"
      load llama-server http://127.0.0.1:8092 1,16,64
      load_chat llama-server http://127.0.0.1:8092
    else
      echo "llama-server did not start"; tail -20 "$out/llama-server.log"
    fi
    kill $pid; wait $pid 2>/dev/null ;;
  esac
done
[ -f "$out/pipellm.json" ] && [ -f "$out/llama-server.json" ] &&
  python3 bench/http_load.py --compare "$out/pipellm.json" "$out/llama-server.json" --plot "$out/serving.svg"
exit 0

#!/usr/bin/env bash
# A streaming chat request read with plain curl (server-sent events) reassembles to the same
# text as pipellm-client gets over gRPC for the same seed; a streaming completion ends with
# `data: [DONE]`; /metrics and /health answer.
# Usage: curl_stream_test.sh PIPELLM-COORDINATOR PIPELLM-CLIENT MODEL.gguf
set -euo pipefail
coord=$1 client=$2 model=$3
dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- coordinator log ---"; cat "$dir/log" || true; exit 1; }

"$coord" --model "$model" --backend inprocess --ctx 512 --threads 1 \
  --listen 127.0.0.1:0 --port-file "$dir/grpc.port" \
  --http-listen 127.0.0.1:0 --http-port-file "$dir/http.port" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if [ -s "$dir/http.port" ] && [ -s "$dir/grpc.port" ] &&
     curl -sf "http://127.0.0.1:$(cat "$dir/http.port")/health" >/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || fail "the coordinator exited"
  sleep 0.1
done
http="http://127.0.0.1:$(cat "$dir/http.port")"
grpc="127.0.0.1:$(cat "$dir/grpc.port")"
curl -sf "$http/health" >/dev/null || fail "not serving"

# Streaming chat with curl.
curl -sN "$http/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Write about the sea"}],
  "max_tokens": 24, "temperature": 0.8, "seed": 5, "stream": true}' >"$dir/chat.sse"
[ "$(grep -c '^data: ' "$dir/chat.sse")" -ge 3 ] || fail "too few events: $(cat "$dir/chat.sse")"
[ "$(grep '^data: ' "$dir/chat.sse" | tail -n 1)" = "data: [DONE]" ] || fail "stream does not end with [DONE]"
grep '^data: ' "$dir/chat.sse" | sed 's/^data: //' | grep -v '^\[DONE\]$' >"$dir/chat.jsonl"
[ "$(head -n 1 "$dir/chat.jsonl" | jq -r '.choices[0].delta.role')" = assistant ] || fail "first delta has no role"
[ "$(jq -r '.object' "$dir/chat.jsonl" | sort -u)" = chat.completion.chunk ] || fail "chunk object"
jq -j '.choices[0].delta.content // empty' "$dir/chat.jsonl" >"$dir/chat.http.txt"

# The same request over gRPC.
"$client" --addr "$grpc" generate --system "You are brief." --chat "user:Write about the sea" -n 24 --temp 0.8 \
  --seed 5 --json >"$dir/chat.grpc.jsonl" 2>"$dir/client.err" || fail "pipellm-client: $(cat "$dir/client.err")"
jq -j '.text // empty' "$dir/chat.grpc.jsonl" >"$dir/chat.grpc.txt"
[ -s "$dir/chat.http.txt" ] || fail "empty streamed text"
cmp -s "$dir/chat.http.txt" "$dir/chat.grpc.txt" ||
  fail "HTTP stream text differs from gRPC: [$(cat "$dir/chat.http.txt")] vs [$(cat "$dir/chat.grpc.txt")]"

# Streaming completion with a usage chunk.
curl -sN "$http/v1/completions" -H 'Content-Type: application/json' -d '{
  "prompt": "Once upon a time", "max_tokens": 8, "ignore_eos": true, "stream": true,
  "stream_options": {"include_usage": true}}' >"$dir/comp.sse"
[ "$(grep '^data: ' "$dir/comp.sse" | tail -n 1)" = "data: [DONE]" ] || fail "completion stream does not end with [DONE]"
grep '^data: ' "$dir/comp.sse" | sed 's/^data: //' | grep -v '^\[DONE\]$' | tail -n 1 >"$dir/usage.json"
[ "$(jq -r '.usage.completion_tokens' "$dir/usage.json")" = 8 ] || fail "usage chunk: $(cat "$dir/usage.json")"

# /metrics counts what just happened.
curl -sf "$http/metrics" >"$dir/metrics.txt" || fail "/metrics"
grep -q '^pipellm_requests_total{front_door="http",route="/v1/chat/completions",status="200"} 1$' "$dir/metrics.txt" ||
  fail "metrics: $(grep requests_total "$dir/metrics.txt")"
grep -q '^pipellm_requests_total{front_door="grpc",route="Generate",status="OK"} 1$' "$dir/metrics.txt" ||
  fail "metrics: $(grep requests_total "$dir/metrics.txt")"
echo "ok: streamed chat == gRPC text ($(wc -c <"$dir/chat.http.txt") bytes)"

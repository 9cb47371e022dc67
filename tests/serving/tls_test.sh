#!/usr/bin/env bash
# TLS and API keys on both front doors: a self-signed certificate (openssl), HTTPS with curl,
# gRPC over TLS with pipellm-client; a missing key gets 401 / UNAUTHENTICATED, plaintext fails.
# Usage: tls_test.sh PIPELLM-COORDINATOR PIPELLM-CLIENT MODEL.gguf
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

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

PIPELLM_API_KEYS=tls-test-key "$coord" --model "$model" --backend inprocess --ctx 256 --threads 1 \
  --listen 127.0.0.1:0 --port-file "$dir/grpc.port" --http-listen 127.0.0.1:0 --http-port-file "$dir/http.port" \
  --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if [ -s "$dir/http.port" ] && [ -s "$dir/grpc.port" ] &&
     curl -sf --cacert "$dir/cert.pem" "https://127.0.0.1:$(cat "$dir/http.port")/health" >/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || fail "the coordinator exited"
  sleep 0.1
done
https="https://127.0.0.1:$(cat "$dir/http.port")"
grpc="127.0.0.1:$(cat "$dir/grpc.port")"
curl -sf --cacert "$dir/cert.pem" "$https/health" >/dev/null || fail "HTTPS /health"

body='{"prompt": "Hello", "max_tokens": 4}'
code=$(curl -s -o "$dir/out.json" -w '%{http_code}' --cacert "$dir/cert.pem" "$https/v1/completions" \
  -H 'Content-Type: application/json' -H 'Authorization: Bearer tls-test-key' -d "$body")
[ "$code" = 200 ] || fail "HTTPS completion with the key: $code $(cat "$dir/out.json")"
code=$(curl -s -o "$dir/out.json" -w '%{http_code}' --cacert "$dir/cert.pem" "$https/v1/completions" \
  -H 'Content-Type: application/json' -d "$body")
[ "$code" = 401 ] || fail "HTTPS completion without a key: $code"
if curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$(cat "$dir/http.port")/health"; then
  fail "plain HTTP answered on the HTTPS port"
fi

"$client" --addr "$grpc" --tls-ca "$dir/cert.pem" --api-key tls-test-key info >"$dir/info.json" 2>&1 ||
  fail "gRPC over TLS with the key: $(cat "$dir/info.json")"
if "$client" --addr "$grpc" --tls-ca "$dir/cert.pem" info >"$dir/err.txt" 2>&1; then fail "gRPC without a key succeeded"; fi
grep -q UNAUTHENTICATED "$dir/err.txt" || fail "gRPC without a key: $(cat "$dir/err.txt")"
if timeout 10 "$client" --addr "$grpc" --api-key tls-test-key info >/dev/null 2>&1; then fail "plaintext gRPC succeeded"; fi
grep -q tls-test-key "$dir/log" && fail "the key appears in the log"
echo "ok: HTTPS and gRPC over TLS, keys enforced"

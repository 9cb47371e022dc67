#!/usr/bin/env bash
# Both front doors refuse non-loopback addresses unless --allow-remote is given, and say so.
# Usage: bind_policy_test.sh PIPELLM-COORDINATOR MODEL.gguf
set -uo pipefail
coord=$1 model=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

for args in "--listen 0.0.0.0:0 --http-listen off" "--listen 127.0.0.1:0 --http-listen 0.0.0.0:0" \
            "--listen [::]:0 --http-listen off"; do
  # shellcheck disable=SC2086
  timeout 60 "$coord" --model "$model" --backend inprocess --ctx 128 --threads 1 $args >"$dir/log" 2>&1
  rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "[$args] was not refused (rc $rc)"
  grep -q -- "--allow-remote" "$dir/log" || fail "[$args] refusal does not name --allow-remote: $(cat "$dir/log")"
done

# With --allow-remote it serves (HTTP on all interfaces, port picked).
timeout 60 "$coord" --model "$model" --backend inprocess --ctx 128 --threads 1 --allow-remote --listen 127.0.0.1:0 \
  --http-listen 0.0.0.0:0 --http-port-file "$dir/http.port" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ -s "$dir/http.port" ] && curl -sf "http://127.0.0.1:$(cat "$dir/http.port")/health" >/dev/null && break
  sleep 0.1
done
ok=0
curl -sf "http://127.0.0.1:$(cat "$dir/http.port" 2>/dev/null || echo 1)/health" >/dev/null && ok=1
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
[ "$ok" = 1 ] || fail "--allow-remote did not serve: $(cat "$dir/log")"
echo "ok: non-loopback addresses need --allow-remote"

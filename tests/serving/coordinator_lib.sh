# Sourced by the shell tests that start a coordinator ($coord must name the binary): a scratch
# directory ($dir, removed on exit with the coordinator), fail MESSAGE (prints the coordinator's
# log), start_http ARGS... (starts it with ARGS and an HTTP port of its choosing, waits until
# /health answers, sets $http) and stop_coordinator.
dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- coordinator log ---"; cat "$dir/log" 2>/dev/null || true; exit 1; }

start_http() {
  rm -f "$dir/http.port"
  "$coord" "$@" --http-listen 127.0.0.1:0 --http-port-file "$dir/http.port" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    if [ -s "$dir/http.port" ] && curl -sf "http://127.0.0.1:$(cat "$dir/http.port")/health" >/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || fail "the coordinator exited"
    sleep 0.1
  done
  http="http://127.0.0.1:$(cat "$dir/http.port")"
}

stop_coordinator() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}

#!/usr/bin/env bash
# Reliability probes (issue 21): replays the attack and fault classes against a real
# pipellm-coordinator on loopback and prints one table row per probe: probe | expected | observed.
#   header flood, slowloris (HTTP and HTTPS), overload (429), browser (CSRF / DNS rebinding), fake head, idle link,
#   hung rank (kill -STOP; the head, and rank 2 of 3 named by its heartbeats), oversized metadata, config typos, key source without keys, busy port.
# Usage: scripts/reliability.sh [BUILD_DIR]   (default build-hard; ctest label `reliability`)
# Exit status 0 when every probe observed what it expected; each probe is bounded in time.
set -uo pipefail
build=${1:-build-hard}
build=$(cd "$build" && pwd)
coord=$build/coordinator/pipellm-coordinator
head_bin=$build/coordinator/pipellm-link-head
stage_bin=$build/stage_worker/pipellm-stage
cli=$build/cli/pipellm
model=$build/testdata/models/tiny-llama-Q8_0.gguf
for f in "$coord" "$head_bin" "$cli" "$model"; do
  [ -e "$f" ] || { echo "reliability: missing $f (build it first)"; exit 2; }
done

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT

rows=()
failed=0
# row PROBE EXPECTED OBSERVED OK(0/1)
row() {
  local mark=ok
  if [ "$4" != 0 ]; then mark=FAIL; failed=$((failed + 1)); fi
  rows+=("$1|$2|$3|$mark")
}
skip() { rows+=("$1|$2|$3|skipped"); }

# start NAME ARGS...: a coordinator with HTTP on a free port, its log in $dir/NAME.log; sets
# $http (base URL) and $cpid once /health answers (or the start failed: $http empty).
start() {
  local name=$1
  shift
  rm -f "$dir/$name.port"
  "$coord" "$@" --http-listen 127.0.0.1:0 --http-port-file "$dir/$name.port" >"$dir/$name.log" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  http=
  local scheme=http
  case " $* " in *" --tls-cert "*) scheme=https ;; esac
  for _ in $(seq 1 300); do
    if [ -s "$dir/$name.port" ] && curl -sk -o /dev/null "$scheme://127.0.0.1:$(cat "$dir/$name.port")/health"; then
      http="$scheme://127.0.0.1:$(cat "$dir/$name.port")"
      return 0
    fi
    kill -0 "$cpid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# stall_stream PIDFILE [SED]: streams a long completion, SIGSTOPs the process named in PIDFILE a
# second in and waits for the stream to end; sets $took (seconds) and $err (the stream's last
# error message, edited by SED), then kills the stopped process.
stall_stream() {
  local body spid pid t0
  body=$(mktemp -p "$dir")
  curl -s -N -m 30 "$http/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt":"a long one","max_tokens":200,"ignore_eos":true,"stream":true}' >"$body" &
  spid=$!
  pids+=($spid)
  sleep 1
  pid=$(cat "$1")
  kill -STOP "$pid"
  t0=$SECONDS
  wait $spid
  took=$((SECONDS - t0))
  err=$(grep -o '"message":"[^"]*' "$body" | tail -1 | cut -d'"' -f4 | sed "${2:-}" | cut -c1-90)
  kill -KILL "$pid" 2>/dev/null
}
stop() {
  kill "$cpid" 2>/dev/null
  wait "$cpid" 2>/dev/null
}
wait_health() {  # wait_health WANT SECONDS: /health's status field
  local want=$1 until=$((SECONDS + $2))
  while [ $SECONDS -le $until ]; do
    [ "$(curl -s -m 2 "$http/health" | jq -r .status 2>/dev/null)" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}
have_py=0
command -v python3 >/dev/null 2>&1 && have_py=1
have_mpirun=0
command -v mpirun >/dev/null 2>&1 && [ -x "$stage_bin" ] && have_mpirun=1

# --- the HTTP door -------------------------------------------------------------------------
if start http --model "$model" --threads 1 --ctx 512 --slots 2 --listen off --http-threads 2 \
  --http-header-timeout-ms 2000 --http-queue-timeout-ms 500 --debug-step-delay-ms 30; then
  port=${http##*:}

  # Header flood: 5000 header lines (~150 KB) -> 431 after at most --max-header-bytes.
  if [ $have_py = 1 ]; then
    got=$(python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
block = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 20) for i in range(5000)) + b"\r\n"
try:
    s.sendall(block)
except OSError:
    pass
try:
    print(s.recv(64).split(b"\r\n")[0].decode())
except OSError as e:
    print("no answer: %s" % e)
PY
)
    case "$got" in *431*) ok=0 ;; *) ok=1 ;; esac
    row "header flood (5000 headers)" "431" "$got" $ok
  else
    skip "header flood" "431" "python3 missing"
  fi

  # Slowloris: 40 connections trickling header bytes; a normal request still answers at once,
  # and the slow ones are closed at the header deadline.
  if [ $have_py = 1 ]; then
    got=$(python3 - "$port" <<'PY'
import socket, sys, time, urllib.request
port = int(sys.argv[1])
slow = []
for _ in range(40):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    slow.append(s)
t0 = time.time()
code = urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5).status
took = time.time() - t0
time.sleep(2.5)
closed = 0
for s in slow:
    try:
        s.settimeout(0.5)
        d = s.recv(256)
        closed += (d == b"" or d.startswith(b"HTTP/1.1 408"))
    except OSError:
        closed += 1
print("health %d in %.2f s; %d/40 slow closed" % (code, took, closed))
PY
)
    case "$got" in "health 200 in 0."*"; 40/40 slow closed") ok=0 ;; *) ok=1 ;; esac
    row "slowloris (40 trickling conns)" "health 200 < 1 s; slow closed at 2 s" "$got" $ok
  else
    skip "slowloris" "health answers" "python3 missing"
  fi

  # Browsers: a text/plain POST (CSRF), a rebound Host, a foreign Origin.
  c1=$(curl -s -o /dev/null -w '%{http_code}' "$http/v1/completions" -H 'Content-Type: text/plain' -d '{"prompt":"x"}')
  c2=$(curl -s -o /dev/null -w '%{http_code}' "$http/v1/models" -H 'Host: evil.example.com')
  c3=$(curl -s -o /dev/null -w '%{http_code}' "$http/v1/models" -H 'Origin: http://evil.example.com')
  c4=$(curl -s -o /dev/null -w '%{http_code}' -X GET "$http/v1/completions")
  got="text/plain $c1, Host $c2, Origin $c3, GET on POST route $c4"
  [ "$got" = "text/plain 415, Host 403, Origin 403, GET on POST route 405" ] && ok=0 || ok=1
  row "browser (CSRF, rebinding, 405)" "415, 403, 403, 405" "$got" $ok

  # Overload: both HTTP workers stream; health answers, one more request gets 429 Retry-After.
  for i in 1 2; do
    curl -s -m 30 "$http/v1/completions" -H 'Content-Type: application/json' \
      -d '{"prompt":"busy","max_tokens":150,"ignore_eos":true}' >/dev/null &
    pids+=($!)
  done
  for _ in $(seq 1 50); do
    curl -s "$http/metrics" | grep -q '^pipellm_http_workers_busy 2' && break
    sleep 0.1
  done
  t0=$(date +%s.%N)
  hcode=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$http/health")
  extra=$(curl -s -D - -o /dev/null -m 10 "$http/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt":"extra","max_tokens":1}' | tr -d '\r' | grep -E '^HTTP|^Retry-After' | tr '\n' ' ')
  got="health $hcode; extra: $extra"
  case "$got" in "health 200; extra: HTTP/1.1 429"*"Retry-After: 1 ") ok=0 ;; *) ok=1 ;; esac
  row "overload (every worker streams)" "health 200; 429 + Retry-After" "$got" $ok

  stop
else
  row "http door" "starts" "did not start: $(tail -1 "$dir/http.log")" 1
fi

# --- the HTTPS door: the same gate, so the same limits -------------------------------------
if [ $have_py = 1 ] && command -v openssl >/dev/null 2>&1; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  if start https --model "$model" --threads 1 --ctx 512 --slots 2 --listen off --http-threads 2 \
    --http-header-timeout-ms 2000 --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem"; then
    # Slowloris over TLS: 40 connections that finish the handshake, then trickle; plus 20 that
    # never start it. A normal HTTPS request answers at once; all 60 are closed at the deadline.
    got=$(python3 - "${http##*:}" <<'PY'
import socket, ssl, sys, time, urllib.request
port = int(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conns = []
for _ in range(40):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    conns.append(s)
conns += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
t0 = time.time()
code = urllib.request.urlopen("https://127.0.0.1:%d/health" % port, timeout=5, context=ctx).status
took = time.time() - t0
time.sleep(2.5)
closed = 0
for s in conns:
    try:
        s.settimeout(0.5)
        d = s.recv(256)
        closed += (d == b"" or d.startswith(b"HTTP/1.1 408"))
    except (OSError, ssl.SSLError):
        closed += 1
print("health %d in %.2f s; %d/60 slow closed" % (code, took, closed))
PY
)
    case "$got" in "health 200 in 0."*"; 60/60 slow closed") ok=0 ;; *) ok=1 ;; esac
    row "slowloris over HTTPS (40 + 20 silent)" "health 200 < 1 s; slow closed at 2 s" "$got" $ok
    stop
  else
    row "https door" "starts" "did not start: $(tail -1 "$dir/https.log")" 1
  fi
else
  skip "slowloris over HTTPS" "health answers" "python3 or openssl missing"
fi

# --- the link -----------------------------------------------------------------------------
# A Hello frame (protocol 4) with the given secret, as a fake head would send it.
fake_head() {  # fake_head PORT SECRET -> "dropped" / "kept"
  python3 - "$1" "$2" <<'PY'
import socket, struct, sys
def s(x): return struct.pack("<I", len(x)) + x
p = struct.pack("<I", 4) + s(b"fake") + s(b"llama") + struct.pack("<6i", 32000, 2, 256, 256, 2, 1) + s(b"") + s(sys.argv[2].encode())
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.sendall(struct.pack("<I", len(p) + 1) + bytes([16]) + p)
c.settimeout(5)
try:
    print("dropped" if c.recv(16) == b"" else "kept")
except socket.timeout:
    print("kept")
except OSError:
    print("dropped")
PY
}
if [ $have_py = 1 ] && [ $have_mpirun = 1 ]; then
  cat >"$dir/one.yaml" <<YAML
model: $model
context_length: 256
max_sequences: 2
threads: 1
stages:
  - device: cpu
YAML
  if start link --config "$dir/one.yaml" --backend mpirun --np 1 --stage-bin "$head_bin" --listen off \
    --restart-on-failure --link-handshake-ms 1000 --stage-arg=--pid-file --stage-arg "$dir/head.pid" \
    --stage-arg=--debug-step-delay-ms --stage-arg=20 && wait_health ok 60; then
    link=$(grep -o -- '--coordinator [0-9.:]*' "$dir/link.log" | head -1 | cut -d' ' -f2)
    lport=${link##*:}
    got=$(fake_head "$lport" 00000000000000000000000000000000)
    logged=$(grep -c 'link: refused the connection from 127.0.0.1' "$dir/link.log")
    [ "$got" = dropped ] && [ "$logged" -ge 1 ] && ok=0 || ok=1
    row "fake head (guessed secret)" "dropped, logged" "$got, $logged refusal(s) logged" $ok

    # Idle link: a connection that never says Hello is dropped at the handshake deadline.
    got=$(python3 - "$lport" <<'PY'
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
t0 = time.time()
c.settimeout(5)
try:
    d = c.recv(16)
    print("dropped after %.1f s" % (time.time() - t0) if d == b"" else "got data")
except socket.timeout:
    print("kept 5 s")
except OSError:
    print("dropped after %.1f s" % (time.time() - t0))
PY
)
    case "$got" in "dropped after "[01].*) ok=0 ;; *) ok=1 ;; esac
    row "idle link connection" "dropped within 1 s" "$got" $ok

    # Hung rank: SIGSTOP the head mid-stream.
    stall_stream "$dir/head.pid"
    wait_health ok 60 && back="relaunched" || back="not back"
    got="stream ended in ${took} s: $err; $back"
    case "$got" in *"ended in "[0-5]" s:"*"rank 0"*relaunched) ok=0 ;; *) ok=1 ;; esac
    row "hung rank (kill -STOP head)" "ends < 5 s naming rank 0; relaunch" "$got" $ok
    stop

    # Hung rank on another host: SIGSTOP rank 2 of 3 with the head's /proc view turned off
    # (PIPELLM_DIAGNOSE_NO_PROC, as for a rank it cannot see), so only the rank heartbeats can
    # name it.
    cat >"$dir/three.yaml" <<YAML
model: $model
context_length: 256
max_sequences: 2
threads: 1
transport: mpi
stages:
  - device: cpu
    layers: [0, 1]
  - device: cpu
    layers: [1, 2]
  - device: cpu
    layers: [2, 2]
YAML
    if PIPELLM_DIAGNOSE_NO_PROC=1 start beats --config "$dir/three.yaml" --backend mpirun --stage-bin "$stage_bin" \
      --listen off --stage-arg=--pid-file --stage-arg "$dir/stage.pid" --stage-arg=--debug-step-delay-ms \
      --stage-arg=20 && wait_health ok 60; then
      stall_stream "$dir/stage.pid.rank2" 's/.*held up at //'
      got="stream ended in ${took} s: $err"
      case "$got" in *"ended in "[0-5]" s: rank 2 on "*"no heartbeat"*) ok=0 ;; *) ok=1 ;; esac
      row "hung rank elsewhere (STOP rank 2 of 3)" "ends < 5 s naming rank 2 (its beats)" "$got" $ok
      stop
    else
      row "hung rank elsewhere" "coordinator starts" "did not start: $(tail -1 "$dir/beats.log")" 1
    fi
  else
    row "link probes" "coordinator starts" "did not start: $(tail -1 "$dir/link.log")" 1
  fi
else
  skip "fake head / idle link / hung rank" "dropped / dropped / 503" "python3 or mpirun missing"
fi

# --- files and configs ----------------------------------------------------------------------
# Oversized metadata: llama.block_count = 1e9 in a copy of the model.
if [ $have_py = 1 ]; then
  python3 - "$model" "$dir/huge.gguf" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
k = b.find(b"llama.block_count")
off = k + len(b"llama.block_count") + 4  # the value follows its u32 type
b[off:off + 4] = struct.pack("<I", 1000000000)
open(sys.argv[2], "wb").write(b)
PY
  t0=$(date +%s%N)
  timeout 20 "$cli" generate -m "$dir/huge.gguf" -p hi -n 1 >/dev/null 2>"$dir/huge.err"
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  bytes=$(wc -c <"$dir/huge.err")
  got="exit $rc in ${ms} ms, ${bytes}-byte error: $(head -c 80 "$dir/huge.err" | tr '\n' ' ')"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$ms" -lt 5000 ] && [ "$bytes" -lt 4096 ] && ok=0 || ok=1
  row "oversized metadata (block_count 1e9)" "fails < 5 s, short error" "$got" $ok
else
  skip "oversized metadata" "fails fast" "python3 missing"
fi

# Model paths that are not files: each named for what it is (all used to be "does not exist").
ln -s "$dir/loop.b" "$dir/loop.a"
ln -s "$dir/loop.a" "$dir/loop.b"
got=
for m in /dev/zero "$dir" "$dir/loop.a"; do
  got+="$("$cli" generate -m "$m" -p hi 2>&1 | grep -o "is a [a-z ]*" | head -1); "
done
got=${got%; }
[ "$got" = "is a character device; is a directory; is a symlink loop" ] && ok=0 || ok=1
row "generate -m /dev/zero, a dir, a loop" "each named" "$got" $ok

# Config typos and a key source without keys: fatal, never a keyless server.
printf 'api_keys_file = "%s/keys"\n' "$dir" >"$dir/typo.toml"
timeout 20 "$coord" --model "$model" --listen off --http-listen 127.0.0.1:0 --server-config "$dir/typo.toml" \
  >"$dir/typo.log" 2>&1
rc=$?
got="exit $rc: $(grep -o "unknown setting '[^']*' (did you mean '[^']*'?)" "$dir/typo.log" | head -1)"
case "$got" in "exit 0"*|"exit 124"*) ok=1 ;; *"did you mean 'api-keys-file'"*) ok=0 ;; *) ok=1 ;; esac
row "config typo (api_keys_file)" "fatal, names the key" "$got" $ok
PIPELLM_API_KEYS=', ,' timeout 20 "$coord" --model "$model" --listen off --http-listen 127.0.0.1:0 >"$dir/keys.log" 2>&1
rc=$?
got="exit $rc: $(grep -o 'PIPELLM_API_KEYS is set but holds no key' "$dir/keys.log" | head -1)"
[ "$got" = "exit 1: PIPELLM_API_KEYS is set but holds no key" ] && ok=0 || ok=1
row "PIPELLM_API_KEYS=', ,'" "fatal" "$got" $ok

# A busy gRPC port: the second coordinator refuses instead of sharing the port.
if start first --model "$model" --threads 1 --ctx 256 --listen 127.0.0.1:0 --port-file "$dir/grpc.port"; then
  timeout 20 "$coord" --model "$model" --listen "127.0.0.1:$(cat "$dir/grpc.port")" --http-listen off >"$dir/second.log" 2>&1
  rc=$?
  got="exit $rc: $(grep -o 'Address already in use' "$dir/second.log" | head -1)"
  [ "$got" = "exit 1: Address already in use" ] && ok=0 || ok=1
  row "busy gRPC port" "exit 1, address in use" "$got" $ok
  stop
else
  skip "busy gRPC port" "exit 1" "no gRPC in this build"
fi

# --- the table ------------------------------------------------------------------------------
printf '%-38s | %-38s | %-6s | %s\n' "probe" "expected" "result" "observed"
printf '%s\n' "$(printf -- '-%.0s' $(seq 1 140))"
for r in "${rows[@]}"; do
  IFS='|' read -r p e o m <<<"$r"
  printf '%-38s | %-38s | %-6s | %s\n' "$p" "$e" "$m" "$o"
done
[ $failed -eq 0 ] || { echo "reliability: $failed probe(s) failed"; exit 1; }

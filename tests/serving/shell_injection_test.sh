#!/usr/bin/env bash
# The coordinator starts its stages from an argument vector, never through a shell: shell
# metacharacters in the config file's name and in values of the server config (--server-config,
# TOML) reach the launched program verbatim and run nothing.
# Usage: shell_injection_test.sh PIPELLM-COORDINATOR MODEL.gguf
set -euo pipefail
coord=$1 model=$2
dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- coordinator log ---"; cat "$dir/log" || true; exit 1; }
cd "$dir"

# A stand-in for mpirun: records its argument vector, one argument per line, and exits.
cat >fake-mpirun <<'SH'
#!/bin/sh
for a in "$@"; do printf '%s\n' "$a"; done >"$(dirname "$0")/argv.txt"
exit 3
SH
chmod +x fake-mpirun

# A pipeline config whose file name is full of shell syntax.
cfg="$dir/"'cfg;touch PWNED1;$(touch PWNED2)`touch PWNED3`|touch PWNED4&.yaml'
cat >"$cfg" <<YAML
model: $model
context_length: 256
stages:
  - device: cpu
YAML
# Server config (TOML) with metacharacters in values handed to mpirun and the stage.
cat >server.toml <<'TOML'
stage-bin = "pipellm-stage;touch PWNED5"
mpirun-arg = ["$(touch PWNED6)", "--x=`touch PWNED7`"]
stage-arg = ["; touch PWNED8 >x", "a && touch PWNED9", "|| touch PWNED10"]
TOML

"$coord" --config "$cfg" --server-config server.toml --backend mpirun --mpirun "$dir/fake-mpirun" \
  --listen 127.0.0.1:0 --http-listen off --startup-timeout 5 >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ -s argv.txt ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[ -s argv.txt ] || fail "the fake mpirun was not started"
sleep 0.5

for n in 1 2 3 4 5 6 7 8 9 10; do [ ! -e "PWNED$n" ] || fail "PWNED$n exists: a shell ran"; done
expect() { grep -qxF -- "$1" argv.txt || fail "argument not passed verbatim: [$1]; got: $(cat argv.txt)"; }
expect "$cfg"
expect 'pipellm-stage;touch PWNED5'
expect '$(touch PWNED6)'
expect '--x=`touch PWNED7`'
expect '; touch PWNED8 >x'
expect 'a && touch PWNED9'
expect '|| touch PWNED10'
echo "ok: $(wc -l <argv.txt) arguments passed verbatim, nothing executed"

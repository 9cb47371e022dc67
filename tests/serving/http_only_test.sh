#!/usr/bin/env bash
# The HTTP front door alone (`--listen off`; the only way in a build without gRPC), and
# llama-server's `ignore_eos`: the fixture model ends these requests early at an
# end-of-generation token; with ignore_eos: true they run to max_tokens (finish_reason
# "length"), streaming too; a non-boolean ignore_eos is a 400 naming the field.
# Usage: http_only_test.sh PIPELLM-COORDINATOR MODEL.gguf   (tiny-llama-Q8_0 fixture)
set -euo pipefail
coord=$1 model=$2
source "$(dirname "$0")/coordinator_lib.sh"

start_http --model "$model" --backend inprocess --ctx 512 --threads 1 --listen off
[ "$(curl -sf "$http/health" | jq -r .status)" = ok ] || fail "not serving"
grep -q "gRPC front door off" "$dir/log" || fail "no log line for the gRPC door being off"

post() {  # post PATH JSON -> body on stdout, status in $dir/status
  curl -s -o "$dir/body" -w '%{http_code}' "$http$1" -H 'Content-Type: application/json' -d "$2" >"$dir/status"
  cat "$dir/body"
}
# expect NAME PATH JSON FINISH COMPLETION_TOKENS ("<N" for fewer than N)
expect() {
  local name=$1 path=$2 body=$3 finish=$4 want=$5 out got fin
  out=$(post "$path" "$body")
  [ "$(cat "$dir/status")" = 200 ] || fail "$name: HTTP $(cat "$dir/status"): $out"
  got=$(jq -r '.usage.completion_tokens' <<<"$out")
  fin=$(jq -r '.choices[0].finish_reason' <<<"$out")
  [ "$fin" = "$finish" ] || fail "$name: finish_reason $fin, expected $finish: $out"
  if [ "${want:0:1}" = "<" ]; then
    [ "$got" -lt "${want:1}" ] || fail "$name: $got completion tokens, expected fewer than ${want:1}: $out"
  else
    [ "$got" = "$want" ] || fail "$name: $got completion tokens, expected $want: $out"
  fi
  echo "ok: $name: $got tokens, $fin"
}

# Completion: greedy "Once" reaches end-of-generation after a few tokens.
comp='"prompt": "Once", "max_tokens": 64, "temperature": 0'
expect "completion" /v1/completions "{$comp}" stop "<64"
expect "completion, ignore_eos false" /v1/completions "{$comp, \"ignore_eos\": false}" stop "<64"
expect "completion, ignore_eos" /v1/completions "{$comp, \"ignore_eos\": true}" length 64
# Chat: this seed ends early too.
chat='"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 48, "temperature": 1.0, "seed": 9'
expect "chat" /v1/chat/completions "{$chat}" stop "<48"
expect "chat, ignore_eos" /v1/chat/completions "{$chat, \"ignore_eos\": true}" length 48

# Streaming with ignore_eos: the usage chunk counts max_tokens.
curl -sN "$http/v1/completions" -H 'Content-Type: application/json' \
  -d "{$comp, \"ignore_eos\": true, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" >"$dir/comp.sse"
[ "$(grep '^data: ' "$dir/comp.sse" | tail -n 1)" = "data: [DONE]" ] || fail "stream does not end with [DONE]"
usage=$(grep '^data: ' "$dir/comp.sse" | sed 's/^data: //' | grep -v '^\[DONE\]$' | tail -n 1)
[ "$(jq -r '.usage.completion_tokens' <<<"$usage")" = 64 ] || fail "streamed usage: $usage"
echo "ok: streamed completion, ignore_eos: 64 tokens"

# A non-boolean ignore_eos is refused by name, on both endpoints.
for req in "/v1/completions {$comp, \"ignore_eos\": \"yes\"}" "/v1/chat/completions {$chat, \"ignore_eos\": 1}"; do
  out=$(post "${req%% *}" "${req#* }")
  [ "$(cat "$dir/status")" = 400 ] || fail "${req%% *} with a non-boolean ignore_eos: HTTP $(cat "$dir/status"): $out"
  [ "$(jq -r .error.param <<<"$out")" = ignore_eos ] || fail "error does not name ignore_eos: $out"
  jq -r .error.message <<<"$out" | grep -q "ignore_eos: must be a boolean" || fail "error message: $out"
done
echo "ok: a non-boolean ignore_eos is a 400 naming the field"

#!/usr/bin/env bash
# CTest `sdk.openai_node`: the official OpenAI SDK (npm `openai`, the exact version in
# package-lock.json) against a real pipellm-coordinator. Installs the SDK with `npm ci` into
# WORKDIR (in the build tree; the source tree stays clean), again only when package.json or the lockfile changes,
# then runs openai_sdk.test.mjs with node's test runner.
# Usage: run_sdk_test.sh PIPELLM-COORDINATOR MODEL.gguf WORKDIR CHAT-TEMPLATE.jinja
# Without node (18 or newer) and npm it fails: scripts/install-deps.sh installs them. The pinned
# SDK (openai 6) names Node 20 as its floor; what this test uses also runs on Debian 12's Node 18
# (checked with 18.20.4).
set -euo pipefail
coord=$1 model=$2 work=$3 template=$4
src=$(cd "$(dirname "$0")" && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }

need="the OpenAI SDK test needs Node.js 18 or newer and npm (scripts/install-deps.sh installs them)"
command -v node >/dev/null 2>&1 || fail "node is not installed: $need"
command -v npm >/dev/null 2>&1 || fail "npm is not installed: $need"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || fail "node $(node --version) is too old: $need"
[ -x "$coord" ] || fail "no coordinator binary at $coord"
[ -f "$model" ] || fail "no model at $model"

mkdir -p "$work"
if ! cat "$src/package.json" "$src/package-lock.json" | cmp -s - "$work/.installed" || [ ! -d "$work/node_modules/openai" ]; then
  cp "$src/package.json" "$src/package-lock.json" "$work/"
  echo "sdk: npm ci in $work (node $(node --version), npm $(npm --version))"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed (is the npm registry reachable?)"
  cat "$src/package.json" "$src/package-lock.json" >"$work/.installed"
fi
# ES modules resolve `openai` from the test file's directory: run a copy beside node_modules.
cp "$src/openai_sdk.test.mjs" "$work/"
echo "sdk: openai $(node -p "require('$work/node_modules/openai/package.json').version")"

log="$work/coordinator.log"
rm -f "$log"
rc=0
PIPELLM_COORDINATOR="$coord" PIPELLM_MODEL="$model" PIPELLM_CHAT_TEMPLATE_FILE="$template" PIPELLM_SDK_LOG="$log" \
  node --test --test-reporter=spec "$work/openai_sdk.test.mjs" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- coordinator log (last 60 lines) ---"
  tail -n 60 "$log" 2>/dev/null || true
fi
exit "$rc"

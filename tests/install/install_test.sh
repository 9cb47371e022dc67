#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then the installed programs run as a user would run
# them from PATH: from a directory outside the source and build trees, `pipellm --version` and
# `pipellm generate` with no -m (so the installed default model, P/share/pipellm/models, must be
# found); with that model moved away, generate fails naming where it looked (an installed binary
# never falls back to the source tree it was built from).
# Usage: install_test.sh CMAKE BUILD_DIR VERSION
set -euo pipefail
cmake=$1 build=$2 version=$3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipellm-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$tmp/prefix
unset DESTDIR
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }
[ -x "$prefix/bin/pipellm" ] || fail "no $prefix/bin/pipellm; installed: $(cd "$prefix" && find . -type f)"
model=$prefix/share/pipellm/models/default.gguf
[ -f "$model" ] || fail "no default model at $model"
for prog in pipellm-stage pipellm-coordinator pipellm-client pipellm-link-head; do
  # Present when this configuration built it.
  if [ -x "$build/stage_worker/$prog" ] || [ -x "$build/coordinator/$prog" ]; then
    [ -x "$prefix/bin/$prog" ] || fail "$prog was built but not installed"
    echo "ok: $prog installed"
  fi
done

work=$tmp/elsewhere
mkdir -p "$work"
cd "$work"

out=$("$prefix/bin/pipellm" --version) || fail "pipellm --version exited $?"
grep -q "^pipellm $version\$" <<<"$out" || fail "pipellm --version printed '$out', expected 'pipellm $version'"
echo "ok: --version: $(head -1 <<<"$out")"

# A fixed seed: this one continues "hello" for all 4 tokens (no end-of-text among them).
"$prefix/bin/pipellm" generate -n 4 -p hello --seed 1 >"$tmp/gen.out" 2>"$tmp/gen.err" ||
  { cat "$tmp/gen.err" >&2; fail "pipellm generate exited $?"; }
text=$(cat "$tmp/gen.out")
[ -n "${text//[[:space:]]/}" ] || fail "pipellm generate printed nothing; stderr: $(cat "$tmp/gen.err")"
grep -q "generation: 4 tokens" "$tmp/gen.err" || fail "expected 4 generated tokens; stderr: $(cat "$tmp/gen.err")"
echo "ok: generate with the installed default model: $text"

mv "$model" "$model.away"
if "$prefix/bin/pipellm" generate -n 4 -p hello >"$tmp/gen.out" 2>"$tmp/gen.err"; then
  fail "generate succeeded without the installed model (it must not use the source tree's)"
fi
grep -qF "$model" "$tmp/gen.err" || fail "the error does not name $model: $(cat "$tmp/gen.err")"
echo "ok: without it: $(cat "$tmp/gen.err")"

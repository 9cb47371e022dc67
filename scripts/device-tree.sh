#!/usr/bin/env bash
# The device tool uploads the working tree with a 64 MiB limit; the test data has outgrown it.
# Before a device call, `scripts/device-tree.sh keep SET...` moves the fixture archives not named
# out of the tree (to .device-aside/, git-ignored); `scripts/device-tree.sh restore` puts them
# back. Sets: fixtures (llama/qwen2/qwen3, vocabularies), fixtures-arch (gemma3, phi3, qwen3moe,
# llama-MoE, gpt-oss), fixtures-next (qwen35, gemma4). Filter the GPU tests to the kept sets.
set -euo pipefail
cd "$(dirname "$0")/.."
aside=.device-aside
case "${1:-}" in
  keep)
    shift
    mkdir -p "$aside"
    for f in tests/data/fixtures*.tar.xz; do
      name=$(basename "$f" .tar.xz)
      keep=0
      for k in "$@"; do [ "$k" = "$name" ] && keep=1; done
      [ "$keep" = 1 ] || mv "$f" "$aside/"
    done
    echo "kept: $*; tracked files now $(git ls-files -z | xargs -0 -r du -cb 2>/dev/null | tail -n 1 | cut -f1) bytes"
    ;;
  restore)
    [ -d "$aside" ] && mv "$aside"/*.tar.xz tests/data/ 2>/dev/null || true
    git status --short tests/data
    ;;
  *)
    echo "usage: $0 keep SET... | restore" >&2
    exit 2
    ;;
esac

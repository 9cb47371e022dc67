#!/usr/bin/env bash
# Rebuilds what device calls carry (.carry/ is git-ignored and does not outlive this machine):
#   .carry/sysroot             Debian packages the GPU machine lacks (scripts/make-device-sysroot.sh)
#   .carry/vocab/*.gguf.xz     tokenizer vocabularies for mkmodel files, when fixtures.tar.xz stays behind
#   .carry/llama/llama-trim.tar.xz   llama.cpp's source (../shared/llama.cpp), for make-llama-bin.sh
#   .carry/llama-bin/llama-bin.tar.xz        llama.cpp's tools for sm_90 (about 45 minutes on 2 cores;
#                              started in the background, log in .carry/llama-bin.log)
#   .carry/llama-bin-slim/llama-bin.tar.xz   the same without llama-server, llama-quantize and libmtmd
#                              (40 MB instead of 45: room for fixtures-next in the 64 MiB upload; swap it in
#                              for such a call: `mv .carry/llama-bin{,-full}; mv .carry/llama-bin{-slim,}`)
# Usage: scripts/make-device-carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .carry/sysroot ] || scripts/make-device-sysroot.sh
mkdir -p .carry/vocab .carry/llama
for v in llama3 qwen3 gptoss gemma3; do
  f=.carry/vocab/vocab-$v.gguf.xz
  [ -f "$f" ] || xz -T2 -6 -c "../shared/fixtures/vocab/vocab-$v.gguf" >"$f"
done
[ -f .carry/llama/llama-trim.tar.xz ] || cp ../shared/llama.cpp/llama.cpp-src.tar.xz .carry/llama/llama-trim.tar.xz
if [ ! -f .carry/llama-bin/llama-bin.tar.xz ]; then
  ( nice scripts/make-llama-bin.sh &&
    t=$(mktemp -d) && tar xJf .carry/llama-bin/llama-bin.tar.xz -C "$t" &&
    rm -f "$t"/lb/llama-server "$t"/lb/libllama-server-impl.so "$t"/lb/llama-quantize \
      "$t"/lb/libllama-quantize-impl.so "$t"/lb/libmtmd.so.0 &&
    mkdir -p .carry/llama-bin-slim && tar cf - -C "$t" lb | xz -T2 -9 >.carry/llama-bin-slim/llama-bin.tar.xz &&
    rm -rf "$t" ) >.carry/llama-bin.log 2>&1 &
  echo "llama.cpp tools: building in the background (pid $!), log .carry/llama-bin.log"
fi
du -sh .carry/* 2>/dev/null

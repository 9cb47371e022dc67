#!/usr/bin/env bash
# Unpacks the Debian packages the GPU machine lacks into .carry/sysroot (carried with device runs).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
(cd "$tmp" && apt-get download libgtest-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 \
  nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 >/dev/null)
rm -rf .carry/sysroot && mkdir -p .carry/sysroot
for f in "$tmp"/*.deb; do dpkg -x "$f" .carry/sysroot; done
rm -rf .carry/sysroot/usr/share/doc .carry/sysroot/usr/share/man "$tmp"
du -sh .carry/sysroot

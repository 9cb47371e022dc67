#!/usr/bin/env bash
# Unpacks the Debian packages the GPU machine lacks into .carry/sysroot (carried with device runs).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
(cd "$tmp" && apt-get download libgtest-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 \
  nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 >/dev/null)
rm -rf .carry/sysroot && mkdir -p .carry/sysroot
for f in "$tmp"/*.deb; do dpkg -x "$f" .carry/sysroot; done
# Only what the build needs: headers, shared libraries, gtest's static libraries (64 MiB travel limit).
rm -rf .carry/sysroot/usr/share/doc .carry/sysroot/usr/share/man .carry/sysroot/usr/src "$tmp"
rm -f .carry/sysroot/usr/lib/x86_64-linux-gnu/lib{pcre2-8,yaml-cpp,utf8proc}.a
du -sh .carry/sysroot

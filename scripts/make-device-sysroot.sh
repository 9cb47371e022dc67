#!/usr/bin/env bash
# Unpacks the Debian 12 packages the GPU machine (Ubuntu 24.04) lacks into .carry/sysroot
# (carried with device runs; scripts/device-build.sh points CMake and pkg-config at it).
#   engine:       pcre2, utf8proc, nlohmann-json, yaml-cpp; tests: gtest
#   coordinator:  spdlog (+ fmt), CLI11, cpp-httplib (HTTP front door; no gRPC there, so
#                 pipellm-coordinator is built HTTP-only)
# cpp-httplib is a shared library in Debian 12 (libcpp-httplib.so.0.11) built with OpenSSL, zlib
# and brotli: its header needs their headers (openssl and zlib are on the GPU machine, brotli's
# are carried here) and the library needs libssl.so.3, libcrypto.so.3, libz.so.1 and
# libbrotli{enc,dec}.so.1 at run time, which Ubuntu 24.04 has (libssl3t64, zlib1g, libbrotli1).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d) && chmod 755 "$tmp"  # readable by apt's _apt user
(cd "$tmp" && apt-get download libgtest-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 \
  nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 \
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev libcpp-httplib-dev libcpp-httplib0.11 \
  libbrotli-dev >/dev/null)
rm -rf .carry/sysroot && mkdir -p .carry/sysroot
for f in "$tmp"/*.deb; do dpkg -x "$f" .carry/sysroot; done
# Only what the build needs: headers, shared libraries, gtest's static libraries (64 MiB travel limit).
L=.carry/sysroot/usr/lib/x86_64-linux-gnu
rm -rf .carry/sysroot/usr/share/doc .carry/sysroot/usr/share/man .carry/sysroot/usr/share/lintian \
  .carry/sysroot/usr/src "$tmp"
rm -f $L/lib{pcre2-8,yaml-cpp,utf8proc}.a $L/libpcre2-{16,32,posix}*  # only pcre2-8 is used
# brotli: headers only (the GPU machine's libbrotli1 is the run-time library).
rm -f $L/libbrotli*.a $L/libbrotli*.so $L/pkgconfig/libbrotli*.pc
# cpp-httplib.pc: relocatable (the sysroot is not at /usr), and no Requires.private (we link the
# shared library, which names its own dependencies; the GPU machine has no brotli .pc files).
sed -i -e 's|^prefix=.*|prefix=${pcfiledir}/../../..|' -e '/^Requires.private:/d' $L/pkgconfig/cpp-httplib.pc
du -sh .carry/sysroot

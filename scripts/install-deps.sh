#!/usr/bin/env bash
# Installs PipeLLM's build and test dependencies with apt (Debian 12 / Ubuntu 24.04).
# Quick no-op when everything is already there. CUDA is optional (/usr/local/cuda is used if present).
set -euo pipefail
pkgs=(build-essential cmake ninja-build ccache git xz-utils pkg-config
      libgtest-dev libpcre2-dev libutf8proc-dev nlohmann-json3-dev libyaml-cpp-dev
      libopenmpi-dev openmpi-bin clang
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
      libspdlog-dev libcli11-dev libcpp-httplib-dev libssl-dev curl jq openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Node.js and npm, for the OpenAI SDK test (tests/sdk): Debian's nodejs and npm where the commands
# are missing. Looked up as commands, not packages: a NodeSource nodejs bundles npm and conflicts
# with Debian's npm package, which apt would install by replacing it.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# libFuzzer's runtime: Debian 12 calls it libclang-rt-14-dev, newer releases libclang-rt-NN-dev.
if ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  missing+=("libclang-rt-dev")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  # Fall back to the versioned runtime name where the metapackage does not exist.
  v=$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
  fixed=("${missing[@]/libclang-rt-dev/libclang-rt-${v:-14}-dev}")
  $SUDO apt-get install -y -q --no-install-recommends "${fixed[@]}"
fi

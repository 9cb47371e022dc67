# Sourced by the device scripts (from the repository root): logs under $OUT, `since` for elapsed
# seconds, and the carried sysroot's libraries (gRPC-less builds still link yaml-cpp etc. from it).
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
S=$(date +%s)
since() { echo "$(( $(date +%s) - S ))s"; }
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# llama.cpp's tools for the comparisons: sets LLAMA_BIN to the folder holding them, the prebuilt
# binaries (scripts/make-llama-bin.sh: .carry/llama-bin) when they travelled, else build-llama/bin.
# With targets named and missing there, builds them from .carry/llama's source in the background
# (several minutes: the caller `wait`s before using them); with none, only locates.
# Usage: llama_tools [llama-bench llama-server ...]
llama_tools() {
  if [ -f .carry/llama-bin/llama-bin.tar.xz ]; then
    LLAMA_BIN=$PWD/build-llama-bin/lb
    [ -x "$LLAMA_BIN/llama-bench" ] || { mkdir -p build-llama-bin && tar xJf .carry/llama-bin/llama-bin.tar.xz -C build-llama-bin; }
    export LD_LIBRARY_PATH=$LLAMA_BIN:$LD_LIBRARY_PATH
  else
    LLAMA_BIN=$PWD/build-llama/bin
    if [ $# -gt 0 ] && [ ! -x "$LLAMA_BIN/$1" ] && [ -f .carry/llama/llama-trim.tar.xz ]; then
      ( mkdir -p build-llama && tar xJf .carry/llama/llama-trim.tar.xz -C build-llama &&
        cmake -S build-llama/llama.cpp -B build-llama -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
          -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON &&
        nice ninja -C build-llama -j8 "$@" ) >"$OUT/llama-build.log" 2>&1 &
    fi
  fi
  export LLAMA_BIN
}

# The path of tokenizer vocabulary NAME (llama3, qwen3, gptoss, gemma3): the fixtures' copy when
# the fixture archive travelled, else the xz copy carried in .carry/vocab (a few MB instead of the
# 37 MB archive), unpacked once. Usage: V=$(vocab llama3)
vocab() {
  local f=build-device/testdata/vocab/vocab-$1.gguf
  if [ ! -f "$f" ] && [ -f .carry/vocab/vocab-$1.gguf.xz ]; then
    f=build-device/vocab/vocab-$1.gguf
    [ -f "$f" ] || { mkdir -p build-device/vocab && xz -dc .carry/vocab/vocab-$1.gguf.xz >"$f"; }
  fi
  echo "$f"
}

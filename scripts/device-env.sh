# Sourced by the device scripts (from the repository root): logs under $OUT, `since` for elapsed
# seconds, and the carried sysroot's libraries (gRPC-less builds still link yaml-cpp etc. from it).
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
S=$(date +%s)
since() { echo "$(( $(date +%s) - S ))s"; }
export LD_LIBRARY_PATH=$PWD/.carry/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

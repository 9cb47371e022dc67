#!/usr/bin/env bash
# Where a step's time goes, per kernel: ncu (duration only, clocks as they run) over one profiled
# range of pipellm_cuda_bench, summed by kernel name (descending) into $OUT/profile-NAME.txt.
# Usage (device machine, after scripts/device-build.sh pipellm_cuda_bench):
#   scripts/device-profile.sh NAME BENCH_ARGS...
#   e.g. scripts/device-profile.sh gemma4-pp --preset gemma4-31b --quant Q4_K_M --no-f16-cache --profile-prefill 512
#        scripts/device-profile.sh q36-tg --preset qwen3.6-35b-a3b --quant Q4_K_M --no-f16-cache --profile-steps 2
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
name=$1; shift
timeout ${PROFILE_S:-240} ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
  build-device/bench/pipellm_cuda_bench --skip-depth --skip-batched "$@" >"$OUT/ncu-$name.csv" 2>"$OUT/ncu-$name.log"
echo "ncu $name rc=$? $(since)"
python3 - "$OUT/ncu-$name.csv" >"$OUT/profile-$name.txt" <<'EOF'
import csv, sys, collections, re
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
tot, cnt = collections.Counter(), collections.Counter()
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    v = float(r["Metric Value"].replace(",", ""))
    v *= {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(r["Metric Unit"], 1.0)
    k = re.split(r"[<(]", r["Kernel Name"].replace("(anonymous namespace)::", ""))[0].replace("void ", "")
    tot[k] += v; cnt[k] += 1
s = sum(tot.values())
print(f"total {s:.0f} us over {sum(cnt.values())} kernels")
for k, v in tot.most_common(25):
    print(f"{v:10.0f} us {100 * v / s:5.1f}% {cnt[k]:6d}x  {k}")
EOF
head -20 "$OUT/profile-$name.txt"

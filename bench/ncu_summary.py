#!/usr/bin/env python3
"""Sums an `ncu --csv --page raw --metrics gpu__time_duration.sum,dram__bytes_read.sum` log per
kernel (template arguments and parameters stripped): launches, total us, GB read, GB/s. When the
log also has launch__grid_size, launches are told apart by grid size too (name/grid)."""
import csv
import re
import sys
from collections import defaultdict


def main(path):
    rows = list(csv.reader(open(path, newline="")))
    start = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    head = rows[start]
    k, t, b = head.index("Kernel Name"), head.index("gpu__time_duration.sum"), head.index("dram__bytes_read.sum")
    g = head.index("launch__grid_size") if "launch__grid_size" in head else -1
    units = rows[start + 1]
    tscale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[units[t]]
    bscale = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}[units[b]]
    agg = defaultdict(lambda: [0, 0.0, 0.0])
    for r in rows[start + 2:]:
        if len(r) <= max(k, t, b):
            continue
        name = re.sub(r"\(.*$", "", r[k])
        name = re.sub(r"<.*>", "<>", name).split("::")[-1]
        if g >= 0:
            name += "/" + r[g].replace(",", "")
        a = agg[name]
        a[0] += 1
        a[1] += float(r[t].replace(",", "")) * tscale
        a[2] += float(r[b].replace(",", "")) * bscale
    total = sum(a[1] for a in agg.values())
    print(f"{'kernel':40s} {'n':>5s} {'us':>9s} {'share':>6s} {'GB':>7s} {'GB/s':>7s}")
    for name, (n, us, by) in sorted(agg.items(), key=lambda x: -x[1][1]):
        print(f"{name[:40]:40s} {n:5d} {us:9.1f} {100 * us / total:5.1f}% {by / 1e9:7.3f} {by / 1e3 / max(us, 1e-9):7.0f}")
    print(f"{'total':40s} {sum(a[0] for a in agg.values()):5d} {total:9.1f}")


if __name__ == "__main__":
    main(sys.argv[1])

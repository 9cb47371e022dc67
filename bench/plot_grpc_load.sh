#!/usr/bin/env bash
# CSV from `pipellm_grpc_load --csv` -> PNG: throughput (tokens/s, requests/s) and latency
# (TTFT and inter-token p50/p99) against concurrency. Needs gnuplot (apt-get install gnuplot-nox).
# usage: bench/plot_grpc_load.sh results.csv out.png [title]
set -euo pipefail
csv=${1:?usage: plot_grpc_load.sh results.csv out.png [title]}
png=${2:?usage: plot_grpc_load.sh results.csv out.png [title]}
title=${3:-pipellm gRPC load}
command -v gnuplot >/dev/null || { echo "plot_grpc_load.sh: gnuplot not found (apt-get install gnuplot-nox); the CSV is $csv" >&2; exit 1; }
gnuplot <<GP
set datafile separator ','
set terminal pngcairo size 1200,480 font 'sans,10'
set output '$png'
set multiplot layout 1,2 title '$title'
set key top left
set grid
set logscale x 2
set xlabel 'concurrent streams'
set ylabel 'tokens/s'
set y2label 'requests/s'
set ytics nomirror
set y2tics
plot '$csv' skip 1 using 1:6 with linespoints lw 2 title 'tokens/s', \
     '' skip 1 using 1:5 axes x1y2 with linespoints lw 2 title 'requests/s'
unset y2label
unset y2tics
set ytics mirror
set ylabel 'ms'
set logscale y 10
plot '$csv' skip 1 using 1:7 with linespoints lw 2 title 'TTFT p50', \
     '' skip 1 using 1:9 with linespoints lw 2 title 'TTFT p99', \
     '' skip 1 using 1:10 with linespoints lw 2 title 'inter-token p50', \
     '' skip 1 using 1:12 with linespoints lw 2 title 'inter-token p99'
unset multiplot
GP
echo "wrote $png"

#!/bin/bash
# usage: run.sh BIN OUTDIR  -- runs the iptables bench, samples the worker's VmHWM/VmRSS every 0.5 s
BIN=$1; OUT=$2; mkdir -p $OUT
uptime > $OUT/load.txt
PROXYPLANES_BENCH_SYNC_LOG=1 nice -n 5 $BIN bench --modes iptables --services 10000 --endpoints 2 --changes 10 --churn-seconds 2 --out $OUT/res > $OUT/stdout.txt 2> $OUT/stderr.txt &
BP=$!
W=""
: > $OUT/hwm.txt
while kill -0 $BP 2>/dev/null; do
  if [ -z "$W" ]; then
    D="$(pgrep -P $BP)"; ALL=""
    while [ -n "$D" ]; do ALL="$ALL $D"; N=""; for d in $D; do N="$N $(pgrep -P $d)"; done; D="$(echo $N)"; done
    for p in $ALL; do grep -q bench-worker /proc/$p/cmdline 2>/dev/null && W=$p; done
  fi
  if [ -n "$W" ] && [ -r /proc/$W/status ]; then
    echo "$(date +%T.%N | cut -c1-10) $(awk '/VmHWM|VmRSS/{printf "%s ", $2}' /proc/$W/status)" >> $OUT/hwm.txt
  fi
  sleep 0.5
done
wait $BP; echo "rc=$?" >> $OUT/load.txt
uptime >> $OUT/load.txt

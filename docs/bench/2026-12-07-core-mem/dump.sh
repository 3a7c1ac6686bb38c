#!/bin/bash
# usage: dump.sh LAB OUTPREFIX
LAB=$1; OUT=$2
nice -n 5 $LAB bench --modes ebpf --services 50000 --endpoints 5 --changes 10 --churn-seconds 2 --out $OUT.d > $OUT.log 2>&1 &
BP=$!
for i in $(seq 1 600); do
  if grep -q "periodic syncs" $OUT.log && pgrep -P $BP -f bench-worker >/dev/null; then break; fi; sleep 0.1
done
W=$(pgrep -P $BP -f "bench-worker" | head -1)
echo worker $W
grep -E "VmRSS|VmHWM" /proc/$W/status
~/.dotnet/tools/dotnet-gcdump collect -p $W -o $OUT.gcdump > $OUT.collect 2>&1
~/.dotnet/tools/dotnet-gcdump report $OUT.gcdump > $OUT.report 2>&1
wait $BP
tail -3 $OUT.log

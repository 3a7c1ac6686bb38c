#!/bin/bash
# run.sh BIN OUTDIR SERVICES ENDPOINTS CHANGES CHURN [GCDUMP_AFTER_PATTERN]
BIN=$1; OUT=$2; S=$3; E=$4; C=$5; CH=$6; PAT=$7
mkdir -p $OUT
echo "start $(date -u +%T) $(cat /proc/loadavg)" > $OUT/load.txt
PROXYPLANES_BENCH_SYNC_LOG=1 nice -n 5 $BIN bench --modes nftables --services $S --endpoints $E --changes $C --churn-seconds $CH --out $OUT > $OUT/stdout.txt 2> $OUT/bench.log &
BPID=$!
descendants() { local p; for p in $(pgrep -P $1); do echo $p; descendants $p; done; }
dumped=0; W=
while kill -0 $BPID 2>/dev/null; do
  if [ -z "$W" ] || [ ! -r /proc/$W/status ]; then
    W=; for p in $(descendants $BPID); do grep -qa "bench-worker" /proc/$p/cmdline 2>/dev/null && grep -qa -- "--settings" /proc/$p/cmdline && W=$p; done
  fi
  if [ -n "$W" ] && [ -r /proc/$W/status ]; then
    r=$(awk '/VmRSS/{print $2}' /proc/$W/status); h=$(awk '/VmHWM/{print $2}' /proc/$W/status)
    t=$(cut -d' ' -f14,15 /proc/$W/stat 2>/dev/null)
    echo "$(date -u +%T.%3N) $r $h $(cut -d' ' -f1 /proc/loadavg) $t" >> $OUT/rss.txt
    if [ -n "$PAT" ] && [ $dumped = 0 ] && grep -q "$PAT" $OUT/bench.log 2>/dev/null; then
      dumped=1; (/root/.dotnet/tools/dotnet-gcdump collect -p $W -o $OUT/after.gcdump > $OUT/gcdump.txt 2>&1 &)
    fi
  fi
  sleep 0.2
done
echo "end $(date -u +%T) $(cat /proc/loadavg)" >> $OUT/load.txt

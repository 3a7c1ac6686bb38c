#!/bin/bash
cd /work/wt-bench-aot
lab=src/Lab/bin/Debug/net10.0/proxyplanes-lab
for round in 1 2; do   # then 3 4
  for w in jit aot; do
    if [ $w = jit ]; then arg=jit; else arg=$PWD/artifacts/bench-worker; fi
    out=/tmp/bench-ab/$w-$round
    echo "$(date -u +%H:%M:%S) start $w-$round load $(cut -d' ' -f1-3 /proc/loadavg)" >> /tmp/bench-ab/log
    nice -n 10 $lab bench --worker $arg --modes iptables,nftables,ebpf --services 10000 --endpoints 2 --changes 25 --churn-seconds 3 --out $out > $out.stdout 2> $out.stderr
    echo "$(date -u +%H:%M:%S) end $w-$round rc $? load $(cut -d' ' -f1-3 /proc/loadavg)" >> /tmp/bench-ab/log
  done
done

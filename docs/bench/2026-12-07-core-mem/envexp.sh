#!/bin/bash
# usage: envexp.sh LAB TAG SIZE(50000x5|10000x2) [ENV=VAL...]
LAB=$1; TAG=$2; SIZE=$3; shift 3
S=${SIZE%x*}; E=${SIZE#*x}
L=$(cut -d' ' -f1 /proc/loadavg)
env "$@" nice -n 5 $LAB bench --modes ebpf --services $S --endpoints $E --changes 10 --churn-seconds 2 --out /tmp/cm/runs/$TAG > /tmp/cm/runs/$TAG.log 2>&1
R=$(grep "^| ebpf" /tmp/cm/runs/$TAG.log | awk -F'|' '{print "cold"$4" rss"$13" cpu"$14}')
echo "$TAG $SIZE load=$L $* :: $R"

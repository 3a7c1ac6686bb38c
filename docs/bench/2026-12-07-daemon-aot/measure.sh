#!/bin/bash
# measure.sh LABEL BIN MODE FILE SECONDS [extra args...]; env passes through
label=$1; bin=$2; mode=$3; file=$4; secs=$5; shift 5
ns=ppd-$$; ip netns add $ns; ip -n $ns link set lo up
ip netns exec $ns $bin run --mode $mode --manifests $file --hostname-override n1 --cluster-cidr 10.244.0.0/16 --v 2 "$@" > log-$label.txt 2>&1 &
pid=$!
first=""
for i in $(seq 1 $((secs*10))); do
  sleep 0.1
  if [ -z "$first" ] && grep -q "Synced" log-$label.txt 2>/dev/null; then first=$(echo "$i*100" | bc); fi
done
# the daemon's PID is a child of ip netns exec (exec replaces): same pid
read -r ut st < <(awk '{print $14, $15}' /proc/$pid/stat)
hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status); rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
kill -TERM $pid; wait $pid 2>/dev/null
ip netns exec $ns nft flush ruleset 2>/dev/null; ip netns del $ns
tck=$(getconf CLK_TCK)
echo "$label mode=$mode first-sync-seen=${first}ms cpu=$(echo "scale=2;($ut+$st)/$tck" | bc)s (user $(echo "scale=2;$ut/$tck"|bc)) peakRSS=$((hwm/1024))MiB RSS=$((rss/1024))MiB load=$(cut -d' ' -f1 /proc/loadavg)"

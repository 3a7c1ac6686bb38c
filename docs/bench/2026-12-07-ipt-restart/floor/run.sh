#!/bin/sh
# Cold-restore floor of the 10,000 x 2 nat table (../../2026-12-07-iptables-deltas/restore/gen.py, chains declared
# in descending order as RuleWriter does), comments on vs off, into a fresh namespace each, interleaved rounds.
# Prints wall and CPU (user+sys of iptables-nft-restore) per run.
G=$(dirname "$0")/../../2026-12-07-iptables-deltas/restore/gen.py
ROUNDS=${1:-2}
for c in on off; do DESC=1 python3 "$G" full 10000 2 $c > /tmp/ipr-floor-$c.txt; done
echo "load $(cat /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for c in on off; do
    ns=ipr-floor-$$-$c
    ip netns add $ns
    /usr/bin/time -f "round $r comments=$c wall %e s cpu %U+%S s" ip netns exec $ns iptables-nft-restore -w 5 --noflush < /tmp/ipr-floor-$c.txt
    ip netns del $ns
  done
done
echo "load $(cat /proc/loadavg)"
rm -f /tmp/ipr-floor-on.txt /tmp/ipr-floor-off.txt

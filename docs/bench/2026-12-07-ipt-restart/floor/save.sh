#!/bin/sh
# How long the read alone takes: iptables-nft-save -t nat of the 10,000 x 2 table (gen.py, comments on) in a fresh namespace.
G=$(dirname "$0")/../../2026-12-07-iptables-deltas/restore/gen.py
ns=ipr-save-$$
ip netns add $ns
DESC=1 python3 "$G" full 10000 2 on | ip netns exec $ns iptables-nft-restore -w 5 --noflush
echo "load $(cat /proc/loadavg)"
for r in 1 2; do /usr/bin/time -f "save -t nat round $r: wall %e s cpu %U+%S s" ip netns exec $ns iptables-nft-save -t nat > /dev/null; done
/usr/bin/time -f "save -t filter: wall %e s cpu %U+%S s" ip netns exec $ns iptables-nft-save -t filter > /dev/null
echo "load $(cat /proc/loadavg)"
ip netns del $ns

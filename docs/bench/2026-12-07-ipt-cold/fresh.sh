#!/bin/bash
name=$1; shift; script=$1; shift
ns=iptc-$$-$RANDOM
ip netns add $ns
/usr/bin/time -f "$name wall=%e user=%U sys=%S maxrss=%MKB" ip netns exec $ns "$@" < $script > /tmp/iptc/$name.stdout
rc=$?
echo "$name rc=$rc rules=$(ip netns exec $ns iptables-nft-save -t nat 2>/dev/null | grep -c '^-A') stdout=$(wc -l < /tmp/iptc/$name.stdout)"
ip netns del $ns

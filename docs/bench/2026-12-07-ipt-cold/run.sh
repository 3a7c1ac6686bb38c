#!/bin/bash
# run.sh NAME SCRIPT ARGS...  : fresh netns, restore, print wall/user/sys
name=$1; shift; script=$1; shift
ns=iptc-$$-$RANDOM
ip netns add $ns
/usr/bin/time -f "$name wall=%e user=%U sys=%S maxrss=%MKB" ip netns exec $ns "$@" < $script
rc=$?
echo "$name rc=$rc rules=$(ip netns exec $ns iptables-nft-save -t nat 2>/dev/null | grep -c '^-A')"
ip netns del $ns

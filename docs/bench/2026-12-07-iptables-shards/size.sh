#!/bin/bash
# cost of one -I (plus -D) in a chain of S rules, iptables-nft, fresh netns per size
for S in 40 160 1000 10000; do
  ns=iptshard-sz$S; ip netns add $ns
  { echo '*nat'; echo ':KUBE-X - [0:0]'; echo ':KUBE-T - [0:0]';
    for i in $(seq 1 $S); do echo "-A KUBE-X -d 10.$((i/65536%256)).$((i/256%256)).$((i%256))/32 -p tcp -m tcp --dport 80 -m comment --comment \"ns/svc$i:http cluster IP\" -j KUBE-T"; done; echo COMMIT; } > fill-$S.txt
  ip netns exec $ns iptables-nft-restore --noflush < fill-$S.txt
  for r in 1 2 3 4 5; do
    printf '*nat\n-I KUBE-X %d -d 10.200.0.%d/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/new%d:http cluster IP" -j KUBE-T\nCOMMIT\n' $((S/2)) $r $r > ins.txt
    s=$(date +%s%N); ip netns exec $ns iptables-nft-restore --noflush < ins.txt; e=$(date +%s%N)
    echo "size $S insert rep $r $(( (e-s)/1000000 )) ms"
  done
  ip netns del $ns
done

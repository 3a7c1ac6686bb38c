#!/bin/bash
# 10,000 service rules: one KUBE-SERVICES chain (old) vs 64 shards (new); time one "service added" insert in each, interleaved, 5 reps.
N=10000
gen() { # $1 = old|new
  echo '*nat'; echo ':KUBE-SERVICES - [0:0]'; echo ':KUBE-T - [0:0]'
  if [ $1 = new ]; then for k in $(seq 63 -1 0); do printf ':KUBE-SERVICES-%02X - [0:0]\n' $k; done; for k in $(seq 0 63); do printf -- '-A KUBE-SERVICES -d 0.0.0.%d/0.0.0.63 -j KUBE-SERVICES-%02X\n' $k $k; done; fi
  for i in $(seq 1 $N); do ip="10.96.$((i/256)).$((i%256))"; ch=KUBE-SERVICES; [ $1 = new ] && ch=$(printf 'KUBE-SERVICES-%02X' $((i%256%64)));
    echo "-A $ch -m comment --comment \"ns/svc$i:http cluster IP\" -m tcp -p tcp -d $ip/32 --dport 80 -j KUBE-T"; done
  echo '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-T'
  echo COMMIT; }
for l in old new; do ip netns add iptshard-p$l; gen $l > fill-$l.txt; ip netns exec iptshard-p$l iptables-nft-restore --noflush < fill-$l.txt; done
for r in 1 2 3 4 5; do for l in old new; do
  ch=KUBE-SERVICES; pos=5000; [ $l = new ] && { ch=KUBE-SERVICES-05; pos=70; }
  printf '*nat\n-I %s %d -m comment --comment "ns/new%d:http cluster IP" -m tcp -p tcp -d 10.200.%d.5/32 --dport 80 -j KUBE-T\nCOMMIT\n' $ch $pos $r $r > ins-$l.txt
  s=$(date +%s%N); ip netns exec iptshard-p$l iptables-nft-restore --noflush < ins-$l.txt; e=$(date +%s%N)
  echo "$l rep $r $(( (e-s)/1000000 )) ms  ($(cut -d' ' -f1-3 /proc/loadavg))"
done; done
for l in old new; do ip netns del iptshard-p$l; done

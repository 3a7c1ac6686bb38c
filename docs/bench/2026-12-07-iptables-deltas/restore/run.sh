#!/bin/bash
# Times iptables-restore --noflush of the synthetic inputs in a namespace of its own. Usage: run.sh VARIANT N COMMENTS
set -u
V=$1; N=$2; C=$3; NS=iptd-exp-$$
cd "$(dirname "$0")"
ip netns add $NS || exit 1
trap 'ip netns del $NS' EXIT
t() { local s=$(date +%s.%N); ip netns exec $NS iptables-$V-restore -w 5 --noflush < "$1" || echo "FAILED $1"; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
python3 gen.py full $N 2 $C > f.$$ 
echo "uptime: $(uptime)"
echo "cold $V N=$N comments=$C: $(t f.$$) s"
I=$((N/2))
python3 gen.py own $N 2 $C $I > own.$$; python3 gen.py delta-text $N 2 $C $I > dt.$$; python3 gen.py delta-num $N 2 $C $I > dn.$$
python3 gen.py shared-rewrite $N 2 $C $I > rw.$$
for k in 1 2 3 4 5; do
  echo "own-chains-only: $(t own.$$) s"
  echo "own+delta(-D text,-I N): $(t dt.$$) s"
  echo "own+delta(-D num,-I N): $(t dn.$$) s"
  python3 gen.py delta-append $N 2 $C $((N+k)) > o.$$; echo "new service (-I N at end): $(t o.$$) s"
done
for k in 1 2; do echo "own+KUBE-SERVICES rewritten (old partial): $(t rw.$$) s"; done
s=$(date +%s.%N); ip netns exec $NS iptables-$V-save -t nat > /dev/null; echo "save nat: $(echo "$(date +%s.%N) - $s" | bc) s"
s=$(date +%s.%N); ip netns exec $NS iptables-$V -w 5 -t nat -S KUBE-PROXY-CANARY >/dev/null 2>&1; echo "list one chain: $(echo "$(date +%s.%N) - $s" | bc) s"
rm -f f.$$ o.$$ own.$$ dt.$$ dn.$$ rw.$$

#!/bin/bash
# CPU time (user+sys, which the machine's load does not inflate much) and wall time of
# iptables-restore --noflush on the synthetic inputs, in a namespace of its own.
# Usage: run-cpu.sh VARIANT N COMMENTS   (chains declared in descending order: DESC=1)
set -u
V=$1; N=$2; C=$3; NS=iptd-cpu-$$
cd "$(dirname "$0")"
ip netns add $NS || exit 1
trap 'ip netns del $NS; rm -f f.$$ own.$$ dt.$$ dn.$$ rw.$$ o.$$' EXIT
TIMEFORMAT='wall %R s, cpu %U+%S s'
t() { { time ip netns exec $NS iptables-$V-restore -w 5 --noflush < "$1" || echo "FAILED $1"; } 2>&1; }
python3 gen.py full $N 2 $C > f.$$
echo "uptime: $(uptime)"
echo "cold $V N=$N comments=$C DESC=${DESC:-0}: $(t f.$$)"
I=$((N/2))
python3 gen.py own $N 2 $C $I > own.$$; python3 gen.py delta-text $N 2 $C $I > dt.$$; python3 gen.py delta-num $N 2 $C $I > dn.$$
python3 gen.py shared-rewrite $N 2 $C $I > rw.$$
for k in 1 2 3 4 5; do
  echo "own-chains-only: $(t own.$$)"
  echo "own+delta(-D text,-I N): $(t dt.$$)"
  echo "own+delta(-D num,-I N): $(t dn.$$)"
  python3 gen.py delta-append $N 2 $C $((N+k)) > o.$$; echo "new service (-I N at end): $(t o.$$)"
done
for k in 1 2; do echo "own+KUBE-SERVICES rewritten (old partial): $(t rw.$$)"; done
echo "uptime: $(uptime)"

#!/bin/bash
# Times iptables-nft-restore --noflush of single line kinds against a 10,000 x 2 nat table (gen.py's layout)
# in a namespace of its own. Usage: run.sh N REPS
set -u
N=$1; R=$2; NS=iptfull-lines-$$; D=$(mktemp -d)
cd "$(dirname "$0")"; GEN=../../2026-12-07-iptables-deltas/restore/gen.py
ip netns add $NS || exit 1
trap 'ip netns del $NS; rm -rf $D' EXIT
t() { local s=$(date +%s%N); ip netns exec $NS iptables-nft-restore -w 5 --noflush < "$1" || echo "FAILED $1" >&2; echo $(( ($(date +%s%N) - s) / 1000000 )); }
DESC=1 python3 $GEN full $N 2 on > $D/full
echo "uptime: $(uptime)"
echo "cold N=$N: $(t $D/full) ms"
I=$((N/2))
python3 $GEN own $N 2 on $I > $D/own
SVC=$(grep -o '^:KUBE-SVC-[A-Z0-9]*' $D/own | head -1 | cut -c2-)
printf '*nat\n:PP-SCRATCH - [0:0]\nCOMMIT\n' > $D/mk; t $D/mk > /dev/null
printf '*nat\n-A PP-SCRATCH -j RETURN\nCOMMIT\n' > $D/floor-add
printf '*nat\n-D PP-SCRATCH -j RETURN\nCOMMIT\n' > $D/floor-del
printf '*nat\n:%s - [0:0]\nCOMMIT\n' $SVC > $D/decl-one
# the service chain alone: declared (flushed) and rewritten
{ echo '*nat'; echo ":$SVC - [0:0]"; grep "^-A $SVC " $D/own; echo COMMIT; } > $D/svc-decl
# the same with -F instead of a declaration
{ echo '*nat'; echo "-F $SVC"; grep "^-A $SVC " $D/own; echo COMMIT; } > $D/svc-flush
# all own chains with -F instead of declarations
{ echo '*nat'; grep '^:' $D/own | cut -d' ' -f1 | sed 's/^:/-F /'; grep '^-A' $D/own; echo COMMIT; } > $D/own-flush
for k in $(seq $R); do
  for v in floor-add floor-del decl-one svc-decl svc-flush own own-flush; do echo "$v $(t $D/$v)"; done
done
echo "uptime: $(uptime)"

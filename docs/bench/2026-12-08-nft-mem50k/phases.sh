#!/bin/bash
# max RSS (MiB) per phase: cold sync | after cold → before resync1's plan (churn + floor) | resync1 | resync2
for d in "$@"; do
  ts=$(grep -E "After the full nftables sync|Before the full nftables plan" $d/bench.log | cut -c1-12 | tr '\n' ' ')
  awk -v ts="$ts" 'function sec(t,  a){split(t,a,":"); return a[1]*3600+a[2]*60+a[3]}
    BEGIN{n=split(ts,T," "); for(i=1;i<=n;i++) B[i]=sec(T[i])}
    {x=sec($1); r=int($2/1024); p=1; while(p<=n && x>B[p]) p++; if(r>M[p]) M[p]=r}
    END{printf "%s: cold %d | floor..read %d | resync1 %d | between %d | resync2 %d | after %d\n", FILENAME, M[1], M[2], M[3], M[4], M[5], M[6]}' $d/rss.txt
done

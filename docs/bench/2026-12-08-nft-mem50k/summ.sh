#!/bin/bash
for d in "$@"; do
  hwm=$(sort -k3 -n $d/rss.txt | tail -1 | awk '{printf "%d", $3/1024}')
  cpu=$(awk "{c=(\$5+\$6)/100; if(c>m)m=c}END{printf \"%.1f\", m}" $d/rss.txt)
  load="$(awk '/start/{s=$3}/end/{e=$3}END{print s" → "e}' $d/load.txt)"
  cold=$(grep -o "Synced full (start): [0-9]* service ports changed.*" $d/bench.log | head -1 | grep -o "total, [0-9.]* ms" | grep -o "[0-9.]*")
  re=$(grep -o "Synced full (start): 0 service ports changed.*" $d/bench.log | grep -o "total, [0-9.]* ms" | grep -o "[0-9.]*" | tr '\n' ' ')
  heaps=$(grep -o "heap [0-9]* → [0-9]*" $d/bench.log | sed 's/heap //' | tr '\n' ';')
  after=$(awk '{print $2}' $d/rss.txt | tail -1)
  echo "$(basename $d) | $load | cold ${cold} | resyncs ${re}| peak ${hwm} MiB | cpu ${cpu} s | heaps ${heaps}"
done

#!/bin/bash
# total bytes per type from a gcdump report: col1 = bytes per object (or total for the >N groups), col2 = count
sed 's/,//g' $1 | awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ { t=$1; if ($0 !~ /Bytes >/) t=$1*$2; name=$3; for(i=4;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /^\(Bytes/ && $i !~ /^>/ && $i !~ /^[0-9]+[KM]?\)$/) name=name" "$i; s[name]+=t; c[name]+=$2 } END { for (n in s) printf "%12d %9d %s\n", s[n], c[n], n }' | sort -rn | head -${2:-40}

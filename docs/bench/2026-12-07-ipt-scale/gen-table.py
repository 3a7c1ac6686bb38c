import sys, hashlib, base64
n = int(sys.argv[1]); order = sys.argv[2]
h = lambda s: base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]
chains = []; rules = []
for i in range(n):
    svc = "KUBE-SVC-" + h("svc%d" % i); chains.append(svc)
    rules.append('-A KUBE-SERVICES -d 10.%d.%d.%d/32 -p tcp -m comment --comment "ns/svc-%d:http cluster IP" -m tcp --dport 80 -j %s' % (96 + (i>>16), (i>>8)&255, i&255, i, svc))
    for e in range(5):
        sep = "KUBE-SEP-" + h("sep%d-%d" % (i, e)); chains.append(sep)
        if e < 4: rules.append('-A %s -m comment --comment "ns/svc-%d:http -> 10.1.1.%d:80" -m statistic --mode random --probability %.11f -j %s' % (svc, i, e, 1.0/(5-e), sep))
        else: rules.append('-A %s -m comment --comment "ns/svc-%d:http -> 10.1.1.%d:80" -j %s' % (svc, i, e, sep))
        rules.append('-A %s -s 10.244.%d.%d/32 -m comment --comment "ns/svc-%d:http" -j MARK --set-xmark 0x4000/0x4000' % (sep, (i>>8)&255, i&255, i))
        rules.append('-A %s -p tcp -m comment --comment "ns/svc-%d:http" -m tcp -j DNAT --to-destination 10.244.%d.%d:80' % (sep, i, (i>>8)&255, i&255))
if order == "desc": chains.sort(reverse=True)
else: chains.sort(key=lambda c: c[::-1])
print("\n".join(["*nat", ":KUBE-SERVICES - [0:0]", "-I PREROUTING 1 -j KUBE-SERVICES", "-S"] + [":%s - [0:0]" % c for c in chains] + rules + ["COMMIT"]))

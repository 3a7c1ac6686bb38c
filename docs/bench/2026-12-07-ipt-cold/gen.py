import hashlib,sys
n=int(sys.argv[1]); out=[]
def h(s): return hashlib.sha256(s.encode()).hexdigest()[:16].upper()
out.append("*nat")
chains=[":KUBE-SERVICES - [0:0]",":KUBE-MARK-MASQ - [0:0]",":KUBE-POSTROUTING - [0:0]"]
rules=["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"]
for i in range(n):
    svc=f"ns{i%50}/svc-{i}:http"; vip=f"10.{96+i//65536}.{(i//256)%256}.{i%256}"
    sc="KUBE-SVC-"+h(svc); chains.append(f":{sc} - [0:0]")
    rules.append(f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "{svc} cluster IP" -m tcp --dport 80 -j {sc}')
    rules.append(f'-A {sc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp -m comment --comment "{svc} cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ')
    for e in range(2):
        ip=f"10.{244+(2*i+e)//65536}.{((2*i+e)//256)%256}.{(2*i+e)%256}"
        sep="KUBE-SEP-"+h(svc+ip); chains.append(f":{sep} - [0:0]")
        if e==0: rules.append(f'-A {sc} -m comment --comment "{svc} -> {ip}:8080" -m statistic --mode random --probability 0.50000000000 -j {sep}')
        else: rules.append(f'-A {sc} -m comment --comment "{svc} -> {ip}:8080" -j {sep}')
        rules.append(f'-A {sep} -s {ip}/32 -m comment --comment "{svc}" -j KUBE-MARK-MASQ')
        rules.append(f'-A {sep} -p tcp -m comment --comment "{svc}" -m tcp -j DNAT --to-destination {ip}:8080')
print("\n".join(out+chains+rules+["COMMIT"]))

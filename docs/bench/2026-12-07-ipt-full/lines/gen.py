#!/usr/bin/env python3
"""Synthetic kube-proxy-like nat table: N services x E endpoints, like the planner's layout."""
import hashlib, base64, sys
def h(s): return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]
def svc(i): return f"ns{i%50}/svc-{i}:http"
def vip(i): return f"10.{96+i//65536}.{(i//256)%256}.{i%256}"
def ep(i,j): return f"10.{200+(i*4+j)//65536}.{((i*4+j)//256)%256}.{(i*4+j)%256}"
def cm(text, on):
    if not on: return ""
    return f' -m comment --comment "{text}"' if ' ' in text else f" -m comment --comment {text}"
def service_rule(i, on): return f"-A KUBE-SERVICES{cm(svc(i)+' cluster IP', on)} -m tcp -p tcp -d {vip(i)}/32 --dport 80 -j KUBE-SVC-{h(svc(i)+'tcp')}"
def own_chains(i, E, on, decl=True):
    s = svc(i); c = f"KUBE-SVC-{h(s+'tcp')}"; out=[]; rules=[]
    seps = [f"KUBE-SEP-{h(s+'tcp'+ep(i,j)+':8080')}" for j in range(E)]
    out.append(f":{c} - [0:0]"); out += [f":{x} - [0:0]" for x in seps]
    rules.append(f"-A {c}{cm(s+' cluster IP', on)} -m tcp -p tcp -d {vip(i)}/32 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")
    for j,x in enumerate(seps):
        prob = f" -m statistic --mode random --probability {1.0/(E-j):.10f}" if E-j>1 else ""
        rules.append(f"-A {c}{cm(s+' -> '+ep(i,j)+':8080', on)}{prob} -j {x}")
    for j,x in enumerate(seps):
        rules.append(f"-A {x}{cm(s, on)} -s {ep(i,j)}/32 -j KUBE-MARK-MASQ")
        rules.append(f"-A {x}{cm(s, on)} -m tcp -p tcp -j DNAT --to-destination {ep(i,j)}:8080")
    return out, rules
def full(N, E, on):
    decl=[":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    rules=["-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"]
    for i in range(N):
        d,r = own_chains(i,E,on); decl+=d; rules+=r; rules.append(service_rule(i,on))
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS')
    import os
    if os.environ.get("DESC") == "1": decl = sorted(decl, reverse=True)
    return "*nat\n" + "\n".join(decl+rules) + "\nCOMMIT\n"
if __name__ == "__main__":
    kind, N, E, on = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "on"
    if kind == "full": sys.stdout.write(full(N,E,on))
    elif kind == "own":   # one service's own chains flushed and rewritten
        i = int(sys.argv[5]); d,r = own_chains(i,E,on); sys.stdout.write("*nat\n"+"\n".join(d+r)+"\nCOMMIT\n")
    elif kind == "shared-rewrite":  # old partial: KUBE-SERVICES flushed and rewritten + one service's chains
        i = int(sys.argv[5]); d,r = own_chains(i,E,on)
        rules=[service_rule(k,on) for k in range(N)]
        rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS')
        sys.stdout.write("*nat\n:KUBE-SERVICES - [0:0]\n"+"\n".join(d+r+rules)+"\nCOMMIT\n")
    elif kind == "delta-text":  # delete the service's KUBE-SERVICES rule by text, insert it again at its place
        i = int(sys.argv[5]); d,r = own_chains(i,E,on); rule=service_rule(i,on)[len("-A KUBE-SERVICES "):]
        sys.stdout.write("*nat\n"+"\n".join(d+r)+f"\n-D KUBE-SERVICES {rule}\n-I KUBE-SERVICES {i+1} {rule}\nCOMMIT\n")
    elif kind == "delta-num":
        i = int(sys.argv[5]); d,r = own_chains(i,E,on); rule=service_rule(i,on)[len("-A KUBE-SERVICES "):]
        sys.stdout.write("*nat\n"+"\n".join(d+r)+f"\n-D KUBE-SERVICES {i+1}\n-I KUBE-SERVICES {i+1} {rule}\nCOMMIT\n")
    elif kind == "delta-append":  # insert before the last rule (a new service at the end)
        i = int(sys.argv[5]); d,r = own_chains(i,E,on); rule=service_rule(i,on)[len("-A KUBE-SERVICES "):]
        sys.stdout.write("*nat\n"+"\n".join(d+r)+f"\n-I KUBE-SERVICES {N+1} {rule}\nCOMMIT\n")

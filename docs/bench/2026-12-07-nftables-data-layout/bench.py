#!/usr/bin/env python3
"""Kernel cost of one endpoint change / one service added, old layout (numgen goto rules and a
chain per endpoint) vs the data layout (endpoint-slots), at N services x 2 endpoints.

Writes the tables with the planner's exact rule shapes (see testdata/*/nft.golden before and after
the change), loads each into its own network namespace, then times the changes with `nft -f` and,
for the kernel alone, the batch's sendmsg (nfnetlink processes and commits the batch inside that
call) with `strace -T`. Run as root:  nice -n 15 python3 bench.py [N] [ROUNDS]
"""
import os, re, statistics, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
T = "ip proxyplanes"

FIXED_COMMON = f"""add table {T} {{ comment "rules for proxyplanes" ; }}
add chain {T} filter-prerouting {{ type filter hook prerouting priority -110 ; policy accept ; }}
add chain {T} filter-input {{ type filter hook input priority -110 ; policy accept ; }}
add chain {T} filter-forward {{ type filter hook forward priority -110 ; policy accept ; }}
add chain {T} filter-output {{ type filter hook output priority -110 ; policy accept ; }}
add chain {T} filter-output-post-dnat {{ type filter hook output priority -90 ; policy accept ; }}
add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; policy accept ; }}
add chain {T} nat-output {{ type nat hook output priority -100 ; policy accept ; }}
add chain {T} nat-postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}
add chain {T} services
add chain {T} endpoints-check
add chain {T} firewall-check
add chain {T} reject-chain
add chain {T} mark-for-masquerade
add chain {T} masquerading
add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; }}
add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}
add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add set {T} health-check-nodeports {{ type inet_service ; }}
add rule {T} filter-prerouting ct state new jump firewall-check
add rule {T} filter-input ct state new jump endpoints-check
add rule {T} filter-input tcp dport @health-check-nodeports accept
add rule {T} filter-forward ct state invalid drop
add rule {T} filter-forward ct state new jump endpoints-check
add rule {T} filter-output ct state new jump firewall-check
add rule {T} filter-output-post-dnat ct state new jump endpoints-check
add rule {T} nat-prerouting jump services
add rule {T} nat-output jump services
add rule {T} nat-postrouting jump masquerading
add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips
add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
add rule {T} endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule {T} endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule {T} reject-chain reject
add rule {T} mark-for-masquerade meta mark set meta mark | 0x4000
"""
MASQ_OLD = f"""add rule {T} masquerading meta mark & 0x4000 == 0 return
add rule {T} masquerading meta mark set meta mark ^ 0x4000
add rule {T} masquerading masquerade fully-random
"""
SHARDS = int(os.environ.get("SHARDS", "256"))
def shard(i): return f"endpoint-slots-tcp-{i % SHARDS:02x}"
FIXED_NEW = "".join(f"add map {T} endpoint-slots-tcp-{k:02x} {{ typeof numgen random mod 4096 : ip daddr . tcp dport ; flags interval ; }}\n" for k in range(SHARDS)) + f"""add set {T} hairpin-endpoints {{ type ipv4_addr . ipv4_addr ; }}
add rule {T} masquerading ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade
""" + MASQ_OLD

def vip(i): return f"10.96.{i // 250}.{i % 250 + 1}"
def ep(i, j): return f"10.{100 + (2 * i + j) // 62500}.{(2 * i + j) // 250 % 250}.{(2 * i + j) % 250 + 1}"
def svc(i): return f"service-H{i:07d}-ns/svc{i}/tcp/http"
def epchain(i, addr): return f"endpoint-H{i:07d}-ns/svc{i}/tcp/http__{addr}/8080"
def masq(i): return f"add rule {T} {svc(i)} ip daddr {vip(i)} tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n"

def old_service(i, eps):
    s = f"add chain {T} {svc(i)}\n" + "".join(f"add chain {T} {epchain(i, a)}\n" for a in eps)
    s += masq(i)
    for k, a in enumerate(eps):
        left = len(eps) - k
        s += f"add rule {T} {svc(i)} " + (f"numgen random mod {left} == 0 goto {epchain(i, a)}\n" if left > 1 else f"goto {epchain(i, a)}\n")
    for a in eps:
        s += f"add rule {T} {epchain(i, a)} ip saddr {a} jump mark-for-masquerade\nadd rule {T} {epchain(i, a)} meta l4proto tcp dnat to {a}:8080\n"
    return s

def slots(i, eps):
    n, base = len(eps), i * 4096
    return [(f"{base + 4096 * k // n}-{base + 4096 * (k + 1) // n - 1}", f"{a} . 8080") for k, a in enumerate(eps)]

def new_service_rules(i):
    return f"add chain {T} {svc(i)}\n" + masq(i) + f"add rule {T} {svc(i)} meta l4proto tcp dnat ip to numgen random mod 4096 offset {i * 4096} map @{shard(i)}\n"

def elements(name, items):
    return f"add element {T} {name} {{\n" + "".join(f"\t{x},\n" for x in items) + "}\n"

def service_ips(items): return elements("service-ips", [f"{vip(i)} . tcp . 80 : goto {svc(i)}" for i in items])

def table(layout):
    eps = {i: [ep(i, 0), ep(i, 1)] for i in range(N)}
    if layout == "old":
        return FIXED_COMMON + MASQ_OLD + "".join(old_service(i, eps[i]) for i in range(N)) + service_ips(range(N))
    body = FIXED_COMMON + FIXED_NEW + "".join(new_service_rules(i) for i in range(N)) + service_ips(range(N))
    for k in range(SHARDS):
        items = [f"{key} : {v}" for i in range(k, N, SHARDS) for key, v in slots(i, eps[i])]
        if items: body += elements(f"endpoint-slots-tcp-{k:02x}", items)
    body += elements("hairpin-endpoints", [f"{a} . {a}" for i in range(N) for a in eps[i]])
    return body

def endpoint_change(layout, i, old_addr, new_addr):
    """Service i's second endpoint old_addr is replaced by new_addr, as the planner's partial sync writes it."""
    first = ep(i, 0)
    if layout == "old":
        s = f"add chain {T} {epchain(i, new_addr)}\nflush chain {T} {svc(i)}\nflush chain {T} {epchain(i, old_addr)}\ndelete chain {T} {epchain(i, old_addr)}\n"
        s += masq(i) + f"add rule {T} {svc(i)} numgen random mod 2 == 0 goto {epchain(i, first)}\nadd rule {T} {svc(i)} goto {epchain(i, new_addr)}\n"
        s += f"add rule {T} {epchain(i, new_addr)} ip saddr {new_addr} jump mark-for-masquerade\nadd rule {T} {epchain(i, new_addr)} meta l4proto tcp dnat to {new_addr}:8080\n"
        return s
    key = slots(i, [first, old_addr])[1][0]
    return (f"delete element {T} {shard(i)} {{ {key} }}\ndelete element {T} hairpin-endpoints {{ {old_addr} . {old_addr} }}\n"
            f"add element {T} {shard(i)} {{ {key} : {new_addr} . 8080 }}\nadd element {T} hairpin-endpoints {{ {new_addr} . {new_addr} }}\n")

def service_added(layout, i):
    eps = [ep(i, 0), ep(i, 1)]
    if layout == "old": return old_service(i, eps) + service_ips([i])
    return new_service_rules(i) + service_ips([i]) + elements(shard(i), [f"{k} : {v}" for k, v in slots(i, eps)]) + elements("hairpin-endpoints", [f"{a} . {a}" for a in eps])

def service_removed(layout, i):
    eps = [ep(i, 0), ep(i, 1)]
    s = f"delete element {T} service-ips {{ {vip(i)} . tcp . 80 }}\n"
    if layout == "old":
        s += f"flush chain {T} {svc(i)}\n" + "".join(f"flush chain {T} {epchain(i, a)}\n" for a in eps)
        return s + f"delete chain {T} {svc(i)}\n" + "".join(f"delete chain {T} {epchain(i, a)}\n" for a in eps)
    s += "".join(f"delete element {T} {shard(i)} {{ {k} }}\n" for k, _ in slots(i, eps))
    s += "".join(f"delete element {T} hairpin-endpoints {{ {a} . {a} }}\n" for a in eps)
    return s + f"flush chain {T} {svc(i)}\ndelete chain {T} {svc(i)}\n"

def kernel_time(ns, text):
    """Applies text; returns (wall seconds of nft -f, seconds in the sendmsg calls carrying the batch)."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
        f.write(text)
    try:
        start = time.perf_counter()
        r = subprocess.run(["ip", "netns", "exec", ns, "strace", "-T", "-e", "trace=sendmsg", "nft", "-f", f.name], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if r.returncode != 0: raise RuntimeError(r.stderr[-2000:])
        times = [float(m) for m in re.findall(r"^sendmsg\(.*NFNL_MSG_BATCH_BEGIN.*<([0-9.]+)>\s*$", r.stderr, re.M)]
        return wall, sum(times)
    finally:
        os.unlink(f.name)

def main():
    results = {}
    for layout in ("old", "new"):
        ns = f"nftlay-bench-{layout}"
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            wall, kern = kernel_time(ns, table(layout))
            results[(layout, "full load")] = [(wall, kern)]
            rows = {"endpoint change": [], "service added": [], "service removed": []}
            spare = N + 5
            for r in range(ROUNDS):
                i = (r * 7919) % N
                a, b = ep(i, 1), f"10.250.{r // 250}.{r % 250 + 1}"
                rows["endpoint change"].append(kernel_time(ns, endpoint_change(layout, i, a, b)))
                kernel_time(ns, endpoint_change(layout, i, b, a))  # back, not counted
                rows["service added"].append(kernel_time(ns, service_added(layout, spare)))
                rows["service removed"].append(kernel_time(ns, service_removed(layout, spare)))
            results.update({(layout, k): v for k, v in rows.items()})
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    load = open("/proc/loadavg").read().split()[:3]
    print(f"N={N} services x 2 endpoints, {ROUNDS} rounds, nft {subprocess.run(['nft', '--version'], capture_output=True, text=True).stdout.strip()}, kernel {os.uname().release}, load {' '.join(load)}")
    print("| change | layout | nft -f p50 (ms) | kernel batch p50 (ms) | kernel min / max (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for (layout, what), values in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0] != "old")):
        walls = [w * 1000 for w, _ in values]; kerns = [k * 1000 for _, k in values]
        print(f"| {what} | {layout} | {statistics.median(walls):.1f} | {statistics.median(kerns):.2f} | {min(kerns):.2f} / {max(kerns):.2f} |")

if __name__ == "__main__":
    main()

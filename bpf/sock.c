// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket hooks on a cgroup v2 directory: a connect (TCP, connected UDP) or sendmsg (unconnected
 * UDP) to a service frontend is rewritten to one of its backends before the kernel routes it, so
 * no packet ever carries the VIP. A frontend with no backends refuses the connect at once
 * (ECONNREFUSED, like kube-proxy's REJECT); one whose verdict is Drop (a Local policy without local
 * endpoints) keeps the VIP, and cgroup_skb/egress drops its packets as if sent. recvmsg and getpeername
 * turn a UDP backend back into the VIP the application sent to. A node port is a frontend on every
 * address of pp_nodeip4_v1 / pp_nodeip6_v1 (the internal-scope entry: what local clients get).
 * Addresses that are not frontends are left alone.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proxyplanes.h"
#include "address.h"

#define PP_ALLOW 1
#define PP_DENY 0
#define PP_ECONNREFUSED 111

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "shared_maps.h"

#include "revnat_maps.h"

#include "srcrange_maps.h"

/* The node's network namespace cookie (struct pp_config): a socket of any other namespace is a pod's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pp_config);
} pp_config_v1 SEC(".maps");

/* The backend of an affinity entry still in time, or 0. */
static __always_inline __u32 pp_affinity_backend(const struct pp_affinity_key *key, const struct pp_service_value *master)
{
	struct pp_affinity_value *entry = bpf_map_lookup_elem(&pp_affinity_v1, key);
	if (!entry)
		return 0;
	if (bpf_ktime_get_ns() - entry->last_used_ns > (__u64)master->affinity_timeout * 1000000000ULL)
		return 0;
	return entry->backend_id;
}

/* 0.0.0.0 (mapped) or :: */
static __always_inline int pp_address_unspecified(const __u32 address[4])
{
	return address[0] == 0 && address[1] == 0 && (address[2] == 0 || address[2] == bpf_htonl(0x0000ffff)) && address[3] == 0;
}

/*
 * Picks a backend for the frontend in *key (address filled in by the caller). Returns 0 when it is
 * not a frontend (left alone), 1 with *picked, *rev_nat_id and *flags (the master's) set, -1 when the frontend
 * has no usable backend.
 */
static __always_inline int pp_pick(struct bpf_sock_addr *ctx, struct pp_service_key *key, struct pp_backend **picked, __u32 *rev_nat_id,
				   __u16 *flags)
{
	struct pp_service_value *master, *slot;
	struct pp_backend *backend;
	struct pp_affinity_key affinity_key = {};
	__u32 backend_id = 0;

	key->port = (__u16)ctx->user_port;
	key->proto = (__u8)ctx->protocol;
	if (pp_address_unspecified(key->address))
		return 0; /* 0.0.0.0 / :: is the kernel's loopback, never a frontend (the family's any address keys the node ports) */
	master = bpf_map_lookup_elem(&pp_services_v2, key);
	if (!master && pp_node_address(key->address)) {
		/*
		 * A node port on a node address, as tc ingress finds it. Loopback is never in pp_nodeip4_v1 /
		 * pp_nodeip6_v1, so 127.0.0.1:NODEPORT stays a local port, as in the other modes (no route_localnet).
		 */
		pp_address_any(key->address);
		master = bpf_map_lookup_elem(&pp_services_v2, key);
		if (master && !(master->flags & PP_SVC_FLAG_NODEPORT))
			return 0;
	}
	if (!master)
		return 0;
	if (master->count == 0) /* Core's Drop leaves the VIP in place for pp_egress to drop; Reject refuses */
		return (master->flags & PP_SVC_FLAG_DROP) ? 0 : -1;

	if (master->flags & PP_SVC_FLAG_AFFINITY) {
		affinity_key.client = bpf_get_netns_cookie(ctx);
		affinity_key.rev_nat_id = master->rev_nat_id;
		backend_id = pp_affinity_backend(&affinity_key, master);
	}

	if (backend_id)
		backend = bpf_map_lookup_elem(&pp_backends_v2, &backend_id);
	else
		backend = 0;
	if (!backend) {
		key->slot = (__u16)(bpf_get_prandom_u32() % master->count) + 1;
		slot = bpf_map_lookup_elem(&pp_services_v2, key);
		if (!slot)
			return -1;
		backend_id = slot->backend_id;
		backend = bpf_map_lookup_elem(&pp_backends_v2, &backend_id);
		if (!backend)
			return -1;
	}

	if (master->flags & PP_SVC_FLAG_AFFINITY) {
		struct pp_affinity_value entry = {
			.last_used_ns = bpf_ktime_get_ns(),
			.backend_id = backend_id,
		};
		bpf_map_update_elem(&pp_affinity_v1, &affinity_key, &entry, BPF_ANY);
	}

	*rev_nat_id = master->rev_nat_id;
	*flags = master->flags;
	*picked = backend;
	return 1;
}

#define PP_EADDRINUSE 98

/*
 * Hairpin: whether the backend is an address of the caller's own network namespace (the pod itself). A connect has no
 * source yet, so: first a listening (TCP) or bound (UDP) socket of this namespace on the backend's address and port
 * (bpf_sk_lookup_tcp/udp); a wildcard listener answers for any address, so for a connect (connect4/6, where
 * bpf_bind exists) the address is then proven by binding to {backend address, backend port}: a local address meets
 * the listener found, which holds the port, so the bind fails with EADDRINUSE and changes nothing; a foreign one fails
 * earlier (EADDRNOTAVAIL). Any other answer (EACCES for a port below 1024 without the capability, EINVAL for a socket
 * already bound) is taken for "not here": the socket path, the pod keeping its source, as before. 0 (both sockets
 * with SO_REUSEPORT: no conflict) leaves the socket bound to the backend's address and port, the pod's own: here.
 * sendmsg has no bpf_bind: there a wildcard socket on the port counts as here.
 */
static __always_inline int pp_backend_is_here(struct bpf_sock_addr *ctx, const struct pp_backend *backend, int connect)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u32 size;
	long error;

	if (pp_address_mapped4(backend->address)) {
		tuple.ipv4.daddr = backend->address[3];
		tuple.ipv4.dport = backend->port;
		size = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.daddr, backend->address, sizeof(tuple.ipv6.daddr));
		tuple.ipv6.dport = backend->port;
		size = sizeof(tuple.ipv6);
	}
	if (ctx->protocol == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	if (!connect)
		return 1;
	if (ctx->user_family == 2 /* AF_INET */) {
		struct sockaddr_in address = { .sin_family = 2, .sin_port = backend->port, .sin_addr.s_addr = backend->address[3] };
		error = bpf_bind(ctx, (struct sockaddr *)&address, sizeof(address));
	} else {
		struct sockaddr_in6 address6 = { .sin6_family = 10 /* AF_INET6 */, .sin6_port = backend->port };
		__builtin_memcpy(&address6.sin6_addr, backend->address, sizeof(address6.sin6_addr));
		error = bpf_bind(ctx, (struct sockaddr *)&address6, sizeof(address6));
	}
	return error == -PP_EADDRINUSE || error == 0;
}

/*
 * Whether a socket's connection needs masquerade the socket path cannot give (it connects the socket straight to the
 * backend, so no packet crosses the node's postrouting): then connect/sendmsg leave it on the frontend, and its
 * packets reach tc ingress on the pod's veth, which DNATs them and sets the masquerade mark as for an off-node
 * client (pp_connection_flags decides there, by the packet's source). Only a pod's socket (its network namespace
 * is not the node's, pp_config_v1): the node's own sockets have no tc program on their way, and masquerading them
 * would give the source the route already gives. A pod needs it when Core masquerades local clients of the frontend:
 * a node port, external or load-balancer IP under policy Cluster (kube-proxy's KUBE-EXT masquerades every source),
 * a cluster IP under --masquerade-all (PP_SVC_FLAG_MASQUERADE_LOCAL); and for hairpin: the picked backend listens in
 * the pod's own namespace (kube-proxy's `-s endpoint` mark; see pp_backend_is_here).
 */
static __always_inline int pp_left_to_tc(struct bpf_sock_addr *ctx, __u16 flags, const struct pp_backend *backend, int connect)
{
	__u32 zero = 0;
	struct pp_config *config = bpf_map_lookup_elem(&pp_config_v1, &zero);

	if (!config || !config->node_netns || bpf_get_netns_cookie(ctx) == config->node_netns)
		return 0;
	if ((flags & PP_SVC_FLAG_MASQUERADE) && (flags & (PP_SVC_FLAG_NODEPORT | PP_SVC_FLAG_EXTERNAL | PP_SVC_FLAG_MASQUERADE_LOCAL)))
		return 1;
	return pp_backend_is_here(ctx, backend, connect);
}

/* TCP and UDP only; everything else is left alone. */
static __always_inline int pp_handled(const struct bpf_sock_addr *ctx)
{
	return ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP;
}

/* A frontend without usable backends: the connect (or sendto) fails at once with ECONNREFUSED. */
static __always_inline int pp_refuse(void)
{
	bpf_set_retval(-PP_ECONNREFUSED);
	return PP_DENY;
}

/*
 * What a reverse-map entry remembers of the master: its source-range flags, for pp_egress. Every UDP socket gets
 * an entry (recvmsg, getpeername); a TCP one only when the frontend has source ranges.
 */
static __always_inline __u16 pp_revnat_flags(__u16 master_flags)
{
	return master_flags & (PP_SVC_FLAG_SOURCE_RANGES | PP_SVC_FLAG_SOURCE_RANGES_NODE);
}

static __always_inline void pp_remember4(struct bpf_sock_addr *ctx, __u32 backend, __u16 backend_port, __u32 vip, __u16 vip_port,
					 __u32 rev_nat_id, __u16 flags)
{
	struct pp_revnat4_key revnat_key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = backend,
		.port = backend_port,
	};
	struct pp_revnat4_value value = {
		.address = vip,
		.port = vip_port,
		.flags = pp_revnat_flags(flags),
		.rev_nat_id = rev_nat_id,
	};
	bpf_map_update_elem(&pp_revnat4_v1, &revnat_key, &value, BPF_ANY);
}

/* connect4 and sendmsg4 share this: rewrite, remember UDP (and source ranges), refuse a frontend without backends. */
static __always_inline int pp_forward4(struct bpf_sock_addr *ctx, int connect)
{
	struct pp_service_key key = {};
	struct pp_backend *backend = 0;
	__u32 rev_nat_id = 0;
	__u16 flags = 0;
	int picked;

	if (!pp_handled(ctx))
		return PP_ALLOW;
	pp_address_from4(key.address, ctx->user_ip4);
	picked = pp_pick(ctx, &key, &backend, &rev_nat_id, &flags);
	if (picked < 0)
		return pp_refuse();
	if (picked == 0 || !backend || pp_left_to_tc(ctx, flags, backend, connect))
		return PP_ALLOW;

	if (ctx->protocol == IPPROTO_UDP || (flags & PP_SVC_FLAG_SOURCE_RANGES))
		pp_remember4(ctx, backend->address[3], backend->port, ctx->user_ip4, (__u16)ctx->user_port, rev_nat_id, flags);
	ctx->user_ip4 = backend->address[3]; /* an IPv4 frontend has IPv4 backends: ::ffff:a.b.c.d */
	ctx->user_port = backend->port;
	return PP_ALLOW;
}

/* recvmsg4 and getpeername4: a backend this socket was sent to shows as the VIP again. */
static __always_inline int pp_reverse4(struct bpf_sock_addr *ctx)
{
	struct pp_revnat4_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	struct pp_revnat4_value *vip = bpf_map_lookup_elem(&pp_revnat4_v1, &key);

	if (vip) {
		ctx->user_ip4 = vip->address;
		ctx->user_port = vip->port;
	}
	return PP_ALLOW;
}

/*
 * connect6 and sendmsg6: as pp_forward4 for an IPv6 socket. An IPv4-mapped destination of a
 * dual-stack socket (::ffff:a.b.c.d) is the same key as the IPv4 frontend, so it is served too.
 */
static __always_inline int pp_forward6(struct bpf_sock_addr *ctx, int connect)
{
	struct pp_service_key key = {};
	struct pp_backend *backend = 0;
	__u32 rev_nat_id = 0;
	__u16 flags = 0;
	int picked;

	if (!pp_handled(ctx))
		return PP_ALLOW;
	key.address[0] = ctx->user_ip6[0];
	key.address[1] = ctx->user_ip6[1];
	key.address[2] = ctx->user_ip6[2];
	key.address[3] = ctx->user_ip6[3];
	picked = pp_pick(ctx, &key, &backend, &rev_nat_id, &flags);
	if (picked < 0)
		return pp_refuse();
	if (picked == 0 || !backend || pp_left_to_tc(ctx, flags, backend, connect))
		return PP_ALLOW;

	if (ctx->protocol == IPPROTO_UDP || (flags & PP_SVC_FLAG_SOURCE_RANGES)) {
		struct pp_revnat6_key revnat_key = {
			.cookie = bpf_get_socket_cookie(ctx),
			.address = { backend->address[0], backend->address[1], backend->address[2], backend->address[3] },
			.port = backend->port,
		};
		struct pp_revnat6_value vip = {
			.address = { key.address[0], key.address[1], key.address[2], key.address[3] },
			.port = key.port,
			.flags = pp_revnat_flags(flags),
			.rev_nat_id = rev_nat_id,
		};
		bpf_map_update_elem(&pp_revnat6_v1, &revnat_key, &vip, BPF_ANY);
		/* A dual-stack socket's IPv4-mapped frontend sends IPv4 packets: pp_egress finds those in the IPv4 map. */
		if ((flags & PP_SVC_FLAG_SOURCE_RANGES) && pp_address_mapped4(backend->address))
			pp_remember4(ctx, backend->address[3], backend->port, key.address[3], key.port, rev_nat_id, flags);
	}
	ctx->user_ip6[0] = backend->address[0];
	ctx->user_ip6[1] = backend->address[1];
	ctx->user_ip6[2] = backend->address[2];
	ctx->user_ip6[3] = backend->address[3];
	ctx->user_port = backend->port;
	return PP_ALLOW;
}

/* recvmsg6 and getpeername6: as pp_reverse4 for an IPv6 socket. */
static __always_inline int pp_reverse6(struct bpf_sock_addr *ctx)
{
	struct pp_revnat6_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] },
		.port = (__u16)ctx->user_port,
	};
	struct pp_revnat6_value *vip = bpf_map_lookup_elem(&pp_revnat6_v1, &key);

	if (vip) {
		ctx->user_ip6[0] = vip->address[0];
		ctx->user_ip6[1] = vip->address[1];
		ctx->user_ip6[2] = vip->address[2];
		ctx->user_ip6[3] = vip->address[3];
		ctx->user_port = vip->port;
	}
	return PP_ALLOW;
}

SEC("cgroup/connect4")
int pp_connect4(struct bpf_sock_addr *ctx)
{
	return pp_forward4(ctx, 1);
}

SEC("cgroup/sendmsg4")
int pp_sendmsg4(struct bpf_sock_addr *ctx)
{
	return pp_forward4(ctx, 0);
}

SEC("cgroup/recvmsg4")
int pp_recvmsg4(struct bpf_sock_addr *ctx)
{
	return pp_reverse4(ctx);
}

SEC("cgroup/getpeername4")
int pp_getpeername4(struct bpf_sock_addr *ctx)
{
	return pp_reverse4(ctx);
}

SEC("cgroup/connect6")
int pp_connect6(struct bpf_sock_addr *ctx)
{
	return pp_forward6(ctx, 1);
}

SEC("cgroup/sendmsg6")
int pp_sendmsg6(struct bpf_sock_addr *ctx)
{
	return pp_forward6(ctx, 0);
}

SEC("cgroup/recvmsg6")
int pp_recvmsg6(struct bpf_sock_addr *ctx)
{
	return pp_reverse6(ctx);
}

SEC("cgroup/getpeername6")
int pp_getpeername6(struct bpf_sock_addr *ctx)
{
	return pp_reverse6(ctx);
}

/* cgroup_skb/egress verdicts: NET_XMIT_CN with the packet dropped makes the sender believe it was sent. */
#define PP_SKB_PASS 1
#define PP_SKB_DROP_AS_SENT 2

#define PP_TCP_FLAG_SYN 0x02

/*
 * loadBalancerSourceRanges for the node's and pods' sockets. connect4/6 and sendmsg4/6 cannot check them: no
 * source address is chosen yet (the kernel picks it by the route to the backend, after the hook). So they connect
 * the socket to a backend as for any frontend and remember the master's source-range flags in the reverse map
 * (cookie + backend); here, with the source the kernel chose, the packet passes when a range of the frontend
 * holds it, or when the ranges hold a node IP (PP_SVC_FLAG_SOURCE_RANGES_NODE) and the source is a node
 * address: kube-proxy's answer for the node, whose request to a load-balancer IP leaves from a node address (or
 * the VIP itself when it is local). Otherwise it is dropped as sent, as kube-proxy's firewall DROP: a TCP connect
 * times out, UDP gets no answer. TCP is checked on SYN only (kube-proxy checks new connections only); UDP every
 * datagram. Returns PP_SKB_PASS or PP_SKB_DROP_AS_SENT.
 */
static __always_inline int pp_source_allowed4(struct __sk_buff *skb, __u32 saddr, __u32 daddr, __u16 dport)
{
	struct pp_revnat4_key key = { .cookie = bpf_get_socket_cookie(skb), .address = daddr, .port = dport };
	struct pp_revnat4_value *entry = bpf_map_lookup_elem(&pp_revnat4_v1, &key);
	struct pp_srcrange4_key range;

	if (!entry || !(entry->flags & PP_SVC_FLAG_SOURCE_RANGES))
		return PP_SKB_PASS;
	range.prefixlen = 64;
	range.rev_nat_id = entry->rev_nat_id;
	range.address = saddr;
	if (bpf_map_lookup_elem(&pp_srcrange_v1, &range))
		return PP_SKB_PASS;
	if ((entry->flags & PP_SVC_FLAG_SOURCE_RANGES_NODE) && bpf_map_lookup_elem(&pp_nodeip4_v1, &saddr))
		return PP_SKB_PASS;
	return PP_SKB_DROP_AS_SENT;
}

/* The same for an IPv6 packet (pp_revnat6_v1, pp_srcrange6_v1, pp_nodeip6_v1). */
static __always_inline int pp_source_allowed6(struct __sk_buff *skb, const struct ipv6hdr *ip6, __u16 dport)
{
	struct pp_revnat6_key key = { .cookie = bpf_get_socket_cookie(skb), .port = dport };
	struct pp_revnat6_value *entry;
	struct pp_srcrange6_key range = { .prefixlen = 32 + 128 };

	__builtin_memcpy(key.address, &ip6->daddr, sizeof(key.address));
	entry = bpf_map_lookup_elem(&pp_revnat6_v1, &key);
	if (!entry || !(entry->flags & PP_SVC_FLAG_SOURCE_RANGES))
		return PP_SKB_PASS;
	range.rev_nat_id = entry->rev_nat_id;
	__builtin_memcpy(range.address, &ip6->saddr, sizeof(range.address));
	if (bpf_map_lookup_elem(&pp_srcrange6_v1, &range))
		return PP_SKB_PASS;
	if ((entry->flags & PP_SVC_FLAG_SOURCE_RANGES_NODE) && bpf_map_lookup_elem(&pp_nodeip6_v1, range.address))
		return PP_SKB_PASS;
	return PP_SKB_DROP_AS_SENT;
}

/*
 * Core's Drop for local clients: a packet (IPv4 or IPv6) still addressed to a frontend whose master entry has no
 * backends and PP_SVC_FLAG_DROP (connect/sendmsg left it alone) is dropped here, as kube-proxy's DROP
 * rule drops it: a TCP SYN is "sent" and retransmitted until connect() times out, a UDP sendto()
 * succeeds and nothing answers. Then the source ranges of the frontend a socket was connected from
 * (pp_source_allowed4/6). Every other packet passes untouched.
 */
SEC("cgroup_skb/egress")
int pp_egress(struct __sk_buff *skb)
{
	struct pp_service_key key = {};
	struct pp_service_value *master;
	struct iphdr ip = {};
	struct ipv6hdr ip6 = {};
	__u8 l4_head[14]; /* ports, sequence, acknowledgment, data offset and the TCP flags */
	__u16 ports[2];
	__u32 l4;
	__u8 proto;
	int ipv4 = skb->protocol == bpf_htons(ETH_P_IP);

	if (ipv4) {
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return PP_SKB_PASS;
		if (ip.frag_off & bpf_htons(0x1fff))
			return PP_SKB_PASS;
		proto = ip.protocol;
		l4 = ip.ihl * 4;
		pp_address_from4(key.address, ip.daddr);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return PP_SKB_PASS;
		proto = ip6.nexthdr; /* extension headers: left alone, as tc does */
		l4 = sizeof(ip6);
		__builtin_memcpy(key.address, &ip6.daddr, sizeof(key.address));
	} else {
		return PP_SKB_PASS;
	}
	if (proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4, l4_head, sizeof(l4_head)))
			return PP_SKB_PASS;
	} else if (proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4, l4_head, 4))
			return PP_SKB_PASS;
		l4_head[13] = 0;
	} else {
		return PP_SKB_PASS;
	}
	__builtin_memcpy(ports, l4_head, sizeof(ports));

	key.port = ports[1];
	key.proto = proto;
	master = bpf_map_lookup_elem(&pp_services_v2, &key);
	if (master && master->count == 0 && (master->flags & PP_SVC_FLAG_DROP))
		return PP_SKB_DROP_AS_SENT;
	if (proto == IPPROTO_TCP && !(l4_head[13] & PP_TCP_FLAG_SYN))
		return PP_SKB_PASS;
	return ipv4 ? pp_source_allowed4(skb, ip.saddr, ip.daddr, ports[1]) : pp_source_allowed6(skb, &ip6, ports[1]);
}

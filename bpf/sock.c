// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket hooks on a cgroup v2 directory: a connect (TCP, connected UDP) or sendmsg (unconnected
 * UDP) to a service frontend is rewritten to one of its backends before the kernel routes it, so
 * no packet ever carries the VIP. A frontend with no backends refuses the connect at once
 * (ECONNREFUSED, like kube-proxy's REJECT); one whose verdict is Drop (a Local policy without local
 * endpoints) keeps the VIP, and cgroup_skb/egress drops its packets as if sent. recvmsg and getpeername
 * turn a UDP backend back into the VIP the application sent to. Addresses that are not frontends are left alone.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proxyplanes.h"

#define PP_ALLOW 1
#define PP_DENY 0
#define PP_ECONNREFUSED 111

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "shared_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PP_MAX_UDP_REVNAT);
	__type(key, struct pp_revnat4_key);
	__type(value, struct pp_revnat4_value);
} pp_revnat4_v1 SEC(".maps");

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

/*
 * Picks a backend for the frontend in ctx and rewrites ctx to it. Returns 0 when ctx is not a
 * frontend (left alone), 1 when rewritten, -1 when the frontend has no usable backend.
 * *vip receives the frontend for the UDP reverse NAT.
 */
static __always_inline int pp_pick_and_rewrite(struct bpf_sock_addr *ctx, struct pp_revnat4_value *vip)
{
	struct pp_service_key key = {};
	struct pp_service_value *master, *slot;
	struct pp_backend *backend;
	struct pp_affinity_key affinity_key = {};
	__u32 backend_id = 0;
	__u8 proto = (__u8)ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;

	key.address = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = proto;
	master = bpf_map_lookup_elem(&pp_services_v1, &key);
	if (!master)
		return 0;
	if (master->count == 0) /* Core's Drop leaves the VIP in place for pp_egress4 to drop; Reject refuses */
		return (master->flags & PP_SVC_FLAG_DROP) ? 0 : -1;

	if (master->flags & PP_SVC_FLAG_AFFINITY) {
		affinity_key.client = bpf_get_netns_cookie(ctx);
		affinity_key.rev_nat_id = master->rev_nat_id;
		backend_id = pp_affinity_backend(&affinity_key, master);
	}

	if (backend_id)
		backend = bpf_map_lookup_elem(&pp_backends_v1, &backend_id);
	else
		backend = 0;
	if (!backend) {
		key.slot = (__u16)(bpf_get_prandom_u32() % master->count) + 1;
		slot = bpf_map_lookup_elem(&pp_services_v1, &key);
		if (!slot)
			return -1;
		backend_id = slot->backend_id;
		backend = bpf_map_lookup_elem(&pp_backends_v1, &backend_id);
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

	vip->address = ctx->user_ip4;
	vip->port = (__u16)ctx->user_port;
	vip->rev_nat_id = master->rev_nat_id;
	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
	return 1;
}

static __always_inline void pp_remember_udp(struct bpf_sock_addr *ctx, const struct pp_revnat4_value *vip)
{
	struct pp_revnat4_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	bpf_map_update_elem(&pp_revnat4_v1, &key, vip, BPF_ANY);
}

/* connect4 and sendmsg4 share this: rewrite, remember UDP, refuse a frontend without backends. */
static __always_inline int pp_forward(struct bpf_sock_addr *ctx)
{
	struct pp_revnat4_value vip = {};
	int picked = pp_pick_and_rewrite(ctx, &vip);

	if (picked < 0) {
		bpf_set_retval(-PP_ECONNREFUSED);
		return PP_DENY;
	}
	if (picked > 0 && ctx->protocol == IPPROTO_UDP)
		pp_remember_udp(ctx, &vip);
	return PP_ALLOW;
}

/* recvmsg4 and getpeername4: a backend this socket was sent to shows as the VIP again. */
static __always_inline int pp_reverse(struct bpf_sock_addr *ctx)
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

SEC("cgroup/connect4")
int pp_connect4(struct bpf_sock_addr *ctx)
{
	return pp_forward(ctx);
}

SEC("cgroup/sendmsg4")
int pp_sendmsg4(struct bpf_sock_addr *ctx)
{
	return pp_forward(ctx);
}

SEC("cgroup/recvmsg4")
int pp_recvmsg4(struct bpf_sock_addr *ctx)
{
	return pp_reverse(ctx);
}

SEC("cgroup/getpeername4")
int pp_getpeername4(struct bpf_sock_addr *ctx)
{
	return pp_reverse(ctx);
}

/* cgroup_skb/egress verdicts: NET_XMIT_CN with the packet dropped makes the sender believe it was sent. */
#define PP_SKB_PASS 1
#define PP_SKB_DROP_AS_SENT 2

/*
 * Core's Drop for local clients: a packet still addressed to a frontend whose master entry has no
 * backends and PP_SVC_FLAG_DROP (connect4/sendmsg4 left it alone) is dropped here, as kube-proxy's DROP
 * rule drops it: a TCP SYN is "sent" and retransmitted until connect() times out, a UDP sendto()
 * succeeds and nothing answers. Every other packet passes untouched.
 */
SEC("cgroup_skb/egress")
int pp_egress4(struct __sk_buff *skb)
{
	struct pp_service_key key = {};
	struct pp_service_value *master;
	struct iphdr ip;
	__u16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PP_SKB_PASS;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return PP_SKB_PASS;
	if ((ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP) || (ip.frag_off & bpf_htons(0x1fff)))
		return PP_SKB_PASS;
	if (bpf_skb_load_bytes(skb, ip.ihl * 4, ports, sizeof(ports)))
		return PP_SKB_PASS;

	key.address = ip.daddr;
	key.port = ports[1];
	key.proto = ip.protocol;
	master = bpf_map_lookup_elem(&pp_services_v1, &key);
	if (master && master->count == 0 && (master->flags & PP_SVC_FLAG_DROP))
		return PP_SKB_DROP_AS_SENT;
	return PP_SKB_PASS;
}

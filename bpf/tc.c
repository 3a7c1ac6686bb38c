// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc programs for traffic from the network, attached as a pair on a node interface that faces
 * clients (tcx, or clsact + cls_bpf direct-action on kernels without tcx):
 *
 *   pp_tc_ingress  a packet to a frontend (a cluster IP from an off-node client, an external or
 *                  load-balancer IP, a node port on one of the node's addresses) is DNATed to a
 *                  backend chosen as bpf/sock.c does (scope, affinity, random slot); a connection
 *                  entry keeps every later packet of the flow on that backend and says how to
 *                  reverse the reply. Source ranges drop (TC_ACT_SHOT), DROP drops, a frontend
 *                  without endpoints is marked for the nftables table to reject, MASQUERADE marks
 *                  the packet for the table's masquerade.
 *   pp_tc_egress   a reply of such a connection (backend -> client) leaves with the frontend the
 *                  client used as its source again.
 *
 * IPv4 and IPv6 TCP and UDP (IPv6 without extension headers); everything else (and non-first
 * fragments) passes untouched. Ideas from cilium's
 * bpf/lib/lb.h and nodeport.h, much smaller: no SNAT of our own (the kernel's masquerade does it, so
 * conntrack and the reply path stay the kernel's), one LRU connection map holding both directions.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proxyplanes.h"
#include "address.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "shared_maps.h"
#include "srcrange_maps.h" /* sock.c's, reused */

/* The tc programs' own. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PP_MAX_CONNECTIONS);
	__type(key, struct pp_ct4_key);
	__type(value, struct pp_ct4_value);
} pp_ct4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PP_MAX_CONNECTIONS);
	__type(key, struct pp_ct6_key);
	__type(value, struct pp_ct6_value);
} pp_ct6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PP_MAX_LOCAL_SOURCES);
	__type(key, struct pp_localsrc4_key);
	__type(value, struct pp_localsrc4_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_localsrc4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PP_MAX_LOCAL_SOURCES);
	__type(key, struct pp_localsrc6_key);
	__type(value, struct pp_localsrc4_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_localsrc6_v1 SEC(".maps");

#define PP_IP_OFFSET ETH_HLEN
#define PP_IP_CSUM_OFFSET (PP_IP_OFFSET + __builtin_offsetof(struct iphdr, check))
#define PP_IP_SADDR_OFFSET (PP_IP_OFFSET + __builtin_offsetof(struct iphdr, saddr))
#define PP_IP_DADDR_OFFSET (PP_IP_OFFSET + __builtin_offsetof(struct iphdr, daddr))
#define PP_IP_FRAG_OFFSET_MASK 0x1fff

/* What the programs need of a packet: its 5-tuple and where its L4 header and checksum are. */
struct pp_packet {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u32 l4_offset;
	__u32 csum_offset;
};

/* Parses an Ethernet + IPv4 + TCP/UDP packet; 0 when it is one the programs handle. */
static __always_inline int pp_parse(struct __sk_buff *skb, struct pp_packet *packet)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u16 *ports;
	__u32 header_length;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	if (ip->frag_off & bpf_htons(PP_IP_FRAG_OFFSET_MASK))
		return -1; /* a later fragment carries no ports */
	header_length = ip->ihl * 4;
	ports = (void *)ip + header_length;
	if ((void *)(ports + 2) > data_end)
		return -1;

	packet->saddr = ip->saddr;
	packet->daddr = ip->daddr;
	packet->sport = ports[0];
	packet->dport = ports[1];
	packet->proto = ip->protocol;
	packet->l4_offset = PP_IP_OFFSET + header_length;
	packet->csum_offset = packet->l4_offset +
			      (ip->protocol == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check) : __builtin_offsetof(struct udphdr, check));
	return 0;
}

/*
 * Rewrites an address and a port (destination when to_destination, else source) and fixes the IPv4
 * header checksum and the TCP/UDP checksum (pseudo header included; a UDP checksum of 0 stays 0).
 */
static __always_inline int pp_rewrite(struct __sk_buff *skb, const struct pp_packet *packet, int to_destination, __u32 address, __u16 port)
{
	__u32 old_address = to_destination ? packet->daddr : packet->saddr;
	__u16 old_port = to_destination ? packet->dport : packet->sport;
	__u32 address_offset = to_destination ? PP_IP_DADDR_OFFSET : PP_IP_SADDR_OFFSET;
	__u32 port_offset = packet->l4_offset + (to_destination ? 2 : 0);
	__u64 l4_flags = packet->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (old_address != address) {
		if (bpf_l4_csum_replace(skb, packet->csum_offset, old_address, address, l4_flags | BPF_F_PSEUDO_HDR | sizeof(address)))
			return -1;
		if (bpf_l3_csum_replace(skb, PP_IP_CSUM_OFFSET, old_address, address, sizeof(address)))
			return -1;
		if (bpf_skb_store_bytes(skb, address_offset, &address, sizeof(address), 0))
			return -1;
	}
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, packet->csum_offset, old_port, port, l4_flags | sizeof(port)))
			return -1;
		if (bpf_skb_store_bytes(skb, port_offset, &port, sizeof(port), 0))
			return -1;
	}
	return 0;
}

/*
 * The master entry of a frontend: for an off-node client the external-scope entry when there is one, else
 * the internal; for a local source (a pod) the internal one, what local sockets get (the short-circuit).
 */
static __always_inline struct pp_service_value *pp_master(struct pp_service_key *key, int local_source)
{
	struct pp_service_value *master;

	key->slot = 0;
	if (!local_source) {
		key->scope = PP_SCOPE_EXTERNAL;
		master = bpf_map_lookup_elem(&pp_services_v2, key);
		if (master)
			return master;
	}
	key->scope = PP_SCOPE_INTERNAL;
	return bpf_map_lookup_elem(&pp_services_v2, key);
}

/* The frontend a packet is addressed to: its destination, or a node port when the destination is a node address. */
static __always_inline struct pp_service_value *pp_lookup_frontend(const struct pp_packet *packet, struct pp_service_key *key, int local_source)
{
	struct pp_service_value *master;

	if (packet->daddr == 0)
		return 0; /* address 0 keys the node ports, never a destination */
	pp_address_from4(key->address, packet->daddr);
	key->port = packet->dport;
	key->proto = packet->proto;
	master = pp_master(key, local_source);
	if (master)
		return master;
	if (!bpf_map_lookup_elem(&pp_nodeip4_v1, &packet->daddr))
		return 0;
	pp_address_from4(key->address, 0); /* a node port: ::ffff:0.0.0.0 */
	master = pp_master(key, local_source);
	if (master && !(master->flags & PP_SVC_FLAG_NODEPORT))
		return 0;
	return master;
}

/* A backend for a new connection: the client's affinity entry still in time, else a random slot. 0 when none. */
static __always_inline __u32 pp_pick_backend(__u64 client, struct pp_service_key *key, const struct pp_service_value *master)
{
	struct pp_affinity_key affinity_key = {};
	struct pp_service_value *slot;
	__u32 backend_id = 0;

	if (master->flags & PP_SVC_FLAG_AFFINITY) {
		struct pp_affinity_value *entry;

		affinity_key.client = client;
		affinity_key.rev_nat_id = master->rev_nat_id;
		entry = bpf_map_lookup_elem(&pp_affinity_v1, &affinity_key);
		if (entry && bpf_ktime_get_ns() - entry->last_used_ns <= (__u64)master->affinity_timeout * 1000000000ULL &&
		    bpf_map_lookup_elem(&pp_backends_v2, &entry->backend_id))
			backend_id = entry->backend_id;
	}

	if (!backend_id) {
		key->slot = (__u16)(bpf_get_prandom_u32() % master->count) + 1;
		slot = bpf_map_lookup_elem(&pp_services_v2, key);
		if (!slot)
			return 0;
		backend_id = slot->backend_id;
	}

	if (master->flags & PP_SVC_FLAG_AFFINITY) {
		struct pp_affinity_value entry = {
			.last_used_ns = bpf_ktime_get_ns(),
			.backend_id = backend_id,
		};
		bpf_map_update_elem(&pp_affinity_v1, &affinity_key, &entry, BPF_ANY);
	}
	return backend_id;
}

/*
 * The backend of a new connection to a frontend (either family): -1 with *backend and *backend_id
 * set, else the verdict. Count 0 drops (PP_SVC_FLAG_DROP) or passes the packet marked for the
 * nftables table to reject; so does a slot naming no backend (a sync in flight).
 */
static __always_inline int pp_choose(struct __sk_buff *skb, struct pp_service_key *key, const struct pp_service_value *master, __u64 client,
				     struct pp_backend **backend, __u32 *backend_id)
{
	if (master->count == 0) {
		if (master->flags & PP_SVC_FLAG_DROP)
			return TC_ACT_SHOT;
		skb->mark |= PP_MARK_REJECT; /* the nftables table answers: tcp reset or icmp port-unreachable */
		return TC_ACT_OK;
	}
	*backend_id = pp_pick_backend(client, key, master);
	*backend = *backend_id ? bpf_map_lookup_elem(&pp_backends_v2, backend_id) : 0;
	if (!*backend) {
		skb->mark |= PP_MARK_REJECT; /* a sync in flight: refuse rather than send to nowhere */
		return TC_ACT_OK;
	}
	return -1;
}

/*
 * The flags a new connection's entries carry (either family). A cluster IP masquerades off-cluster sources only:
 * a local source keeps its own unless --masquerade-all (the local source's flag, or the master's MASQUERADE_LOCAL).
 * External frontends (node ports, external and load-balancer IPs) masquerade every source their flag covers. Hairpin (the backend is the client): a pod reaching itself
 * through a frontend sees the node's address, as kube-proxy's `-s endpoint` mark.
 */
static __always_inline __u16 pp_connection_flags(const struct pp_service_value *master, const struct pp_localsrc4_value *local, int hairpin)
{
	__u16 flags = master->flags;

	if (local && !(local->flags & PP_LOCAL_SOURCE_MASQUERADE) && !(flags & (PP_SVC_FLAG_NODEPORT | PP_SVC_FLAG_EXTERNAL | PP_SVC_FLAG_MASQUERADE_LOCAL)))
		flags &= ~PP_SVC_FLAG_MASQUERADE;
	if (hairpin)
		flags |= PP_SVC_FLAG_MASQUERADE;
	return flags;
}

/* A new connection to a frontend: verdicts first (source ranges, no endpoints), then a backend and both connection entries. */
static __always_inline int pp_new_connection(struct __sk_buff *skb, const struct pp_packet *packet, struct pp_ct4_value *forward)
{
	struct pp_localsrc4_key source = { .prefixlen = 32, .address = packet->saddr };
	struct pp_localsrc4_value *local = bpf_map_lookup_elem(&pp_localsrc4_v1, &source);
	struct pp_service_key key = {};
	struct pp_service_value *master = pp_lookup_frontend(packet, &key, local != 0);
	struct pp_backend *backend = 0;
	__u32 backend_id = 0;
	__u16 flags;
	int verdict;

	if (!master)
		return TC_ACT_OK; /* not a frontend: untouched */

	if (master->flags & PP_SVC_FLAG_SOURCE_RANGES) {
		struct pp_srcrange4_key range = {
			.prefixlen = 64,
			.rev_nat_id = master->rev_nat_id,
			.address = packet->saddr,
		};
		if (!bpf_map_lookup_elem(&pp_srcrange_v1, &range))
			return TC_ACT_SHOT;
	}

	verdict = pp_choose(skb, &key, master, PP_AFFINITY_CLIENT_ADDRESS | packet->saddr, &backend, &backend_id);
	if (verdict >= 0)
		return verdict;

	flags = pp_connection_flags(master, local, backend->address[3] == packet->saddr);

	forward->address = backend->address[3]; /* an IPv4 frontend has IPv4 backends: ::ffff:a.b.c.d */
	forward->port = backend->port;
	forward->flags = flags;
	forward->rev_nat_id = master->rev_nat_id;
	forward->backend_id = backend_id;

	struct pp_ct4_key reply_key = {
		.saddr = backend->address[3],
		.daddr = packet->saddr,
		.sport = backend->port,
		.dport = packet->sport,
		.proto = packet->proto,
		.direction = PP_CT_REPLY,
	};
	struct pp_ct4_value reply = {
		.address = packet->daddr, /* the address the client used, a node address for a node port */
		.port = packet->dport,
		.flags = flags,
		.rev_nat_id = master->rev_nat_id,
	};
	struct pp_ct4_key forward_key = {
		.saddr = packet->saddr,
		.daddr = packet->daddr,
		.sport = packet->sport,
		.dport = packet->dport,
		.proto = packet->proto,
		.direction = PP_CT_FORWARD,
	};
	/* The reply entry first: a backend's answer must never find a forward entry without it. */
	if (bpf_map_update_elem(&pp_ct4_v1, &reply_key, &reply, BPF_ANY) ||
	    bpf_map_update_elem(&pp_ct4_v1, &forward_key, forward, BPF_ANY))
		return TC_ACT_SHOT;
	return -1; /* forward it */
}

/* The connection entry's key for a packet as it is seen, in one direction. */
static __always_inline struct pp_ct4_key pp_ct_key(const struct pp_packet *packet, __u8 direction)
{
	struct pp_ct4_key key = {
		.saddr = packet->saddr,
		.daddr = packet->daddr,
		.sport = packet->sport,
		.dport = packet->dport,
		.proto = packet->proto,
		.direction = direction,
	};
	return key;
}

/* ---- IPv6: the same steps with 16-byte addresses (pp_ct6_v1, pp_nodeip6_v1, pp_localsrc6_v1, pp_srcrange6_v1); no L3 checksum to fix. ---- */

#define PP_IP6_OFFSET ETH_HLEN
#define PP_IP6_SADDR_OFFSET (PP_IP6_OFFSET + __builtin_offsetof(struct ipv6hdr, saddr))
#define PP_IP6_DADDR_OFFSET (PP_IP6_OFFSET + __builtin_offsetof(struct ipv6hdr, daddr))

struct pp_packet6 {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u32 l4_offset;
	__u32 csum_offset;
};

/* Parses an Ethernet + IPv6 + TCP/UDP packet (TCP or UDP the first next header); 0 when it is one the programs handle. */
static __always_inline int pp_parse6(struct __sk_buff *skb, struct pp_packet6 *packet)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6;
	__u16 *ports;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return -1;
	ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return -1;
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return -1; /* extension headers (fragments among them) are not walked */
	ports = (void *)(ip6 + 1);
	if ((void *)(ports + 2) > data_end)
		return -1;

	pp_address_copy(packet->saddr, ip6->saddr.in6_u.u6_addr32);
	pp_address_copy(packet->daddr, ip6->daddr.in6_u.u6_addr32);
	packet->sport = ports[0];
	packet->dport = ports[1];
	packet->proto = ip6->nexthdr;
	packet->l4_offset = PP_IP6_OFFSET + sizeof(struct ipv6hdr);
	packet->csum_offset = packet->l4_offset +
			      (ip6->nexthdr == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check) : __builtin_offsetof(struct udphdr, check));
	return 0;
}

/* As pp_rewrite for IPv6: the TCP/UDP checksum gets the pseudo header's difference (bpf_csum_diff over the 16 bytes). */
static __always_inline int pp_rewrite6(struct __sk_buff *skb, const struct pp_packet6 *packet, int to_destination, const __u32 address[4], __u16 port)
{
	__u32 old_address[4], new_address[4];
	__u16 old_port = to_destination ? packet->dport : packet->sport;
	__u32 address_offset = to_destination ? PP_IP6_DADDR_OFFSET : PP_IP6_SADDR_OFFSET;
	__u32 port_offset = packet->l4_offset + (to_destination ? 2 : 0);
	__u64 l4_flags = packet->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	pp_address_copy(old_address, to_destination ? packet->daddr : packet->saddr);
	pp_address_copy(new_address, address);
	if (!pp_address_equal(old_address, new_address)) {
		__s64 diff = bpf_csum_diff(old_address, sizeof(old_address), new_address, sizeof(new_address), 0);

		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, packet->csum_offset, 0, (__u32)diff, l4_flags | BPF_F_PSEUDO_HDR))
			return -1;
		if (bpf_skb_store_bytes(skb, address_offset, new_address, sizeof(new_address), 0))
			return -1;
	}
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, packet->csum_offset, old_port, port, l4_flags | sizeof(port)))
			return -1;
		if (bpf_skb_store_bytes(skb, port_offset, &port, sizeof(port), 0))
			return -1;
	}
	return 0;
}

/* The connection entry's key for an IPv6 packet as it is seen, in one direction. */
static __always_inline void pp_ct6_key_of(const struct pp_packet6 *packet, __u8 direction, struct pp_ct6_key *key)
{
	pp_address_copy(key->saddr, packet->saddr);
	pp_address_copy(key->daddr, packet->daddr);
	key->sport = packet->sport;
	key->dport = packet->dport;
	key->proto = packet->proto;
	key->direction = direction;
}

/*
 * A new IPv6 connection, the steps of pp_new_connection: the frontend (its destination, or a node port on a node
 * IPv6 address, key ::; a source in pp_localsrc6_v1 reads the internal scope only), source ranges
 * (pp_srcrange6_v1), a backend, the flags and both connection entries. The affinity client is the source folded
 * to 63 bits (entries are per frontend, and an IPv6 frontend's rev_nat_id is never an IPv4 one's).
 */
static __always_inline int pp_new_connection6(struct __sk_buff *skb, const struct pp_packet6 *packet, struct pp_ct6_value *forward)
{
	struct pp_localsrc6_key source = { .prefixlen = 128 };
	struct pp_localsrc4_value *local;
	struct pp_service_key key = {};
	struct pp_service_value *master;
	struct pp_backend *backend = 0;
	__u32 backend_id = 0;
	__u64 client;
	__u16 flags;
	int verdict;

	pp_address_copy(source.address, packet->saddr);
	local = bpf_map_lookup_elem(&pp_localsrc6_v1, &source);
	pp_address_copy(key.address, packet->daddr);
	key.port = packet->dport;
	key.proto = packet->proto;
	master = pp_master(&key, local != 0);
	if (!master) {
		if (!bpf_map_lookup_elem(&pp_nodeip6_v1, packet->daddr))
			return TC_ACT_OK;
		key.address[0] = key.address[1] = key.address[2] = key.address[3] = 0; /* a node port: :: */
		master = pp_master(&key, local != 0);
		if (!master || !(master->flags & PP_SVC_FLAG_NODEPORT))
			return TC_ACT_OK;
	}

	if (master->flags & PP_SVC_FLAG_SOURCE_RANGES) {
		struct pp_srcrange6_key range = {
			.prefixlen = 32 + 128,
			.rev_nat_id = master->rev_nat_id,
		};
		pp_address_copy(range.address, packet->saddr);
		if (!bpf_map_lookup_elem(&pp_srcrange6_v1, &range))
			return TC_ACT_SHOT;
	}

	client = PP_AFFINITY_CLIENT_ADDRESS | ((__u64)(packet->saddr[0] ^ packet->saddr[1]) << 32) | (packet->saddr[2] ^ packet->saddr[3]);
	verdict = pp_choose(skb, &key, master, client, &backend, &backend_id);
	if (verdict >= 0)
		return verdict;

	flags = pp_connection_flags(master, local, pp_address_equal(backend->address, packet->saddr));
	pp_address_copy(forward->address, backend->address);
	forward->port = backend->port;
	forward->flags = flags;
	forward->rev_nat_id = master->rev_nat_id;
	forward->backend_id = backend_id;

	struct pp_ct6_key reply_key = {}, forward_key = {};
	struct pp_ct6_value reply = {
		.port = packet->dport,
		.flags = flags,
		.rev_nat_id = master->rev_nat_id,
	};
	pp_address_copy(reply_key.saddr, backend->address);
	pp_address_copy(reply_key.daddr, packet->saddr);
	reply_key.sport = backend->port;
	reply_key.dport = packet->sport;
	reply_key.proto = packet->proto;
	reply_key.direction = PP_CT_REPLY;
	pp_address_copy(reply.address, packet->daddr); /* the address the client used, a node address for a node port */
	pp_ct6_key_of(packet, PP_CT_FORWARD, &forward_key);
	/* The reply entry first: a backend's answer must never find a forward entry without it. */
	if (bpf_map_update_elem(&pp_ct6_v1, &reply_key, &reply, BPF_ANY) ||
	    bpf_map_update_elem(&pp_ct6_v1, &forward_key, forward, BPF_ANY))
		return TC_ACT_SHOT;
	return -1; /* forward it */
}

static __always_inline int pp_ingress6(struct __sk_buff *skb)
{
	struct pp_packet6 packet = {};
	struct pp_ct6_key key = {};
	struct pp_ct6_value forward = {};
	struct pp_ct6_value *known;
	int verdict;

	if (pp_parse6(skb, &packet))
		return TC_ACT_OK;
	pp_ct6_key_of(&packet, PP_CT_FORWARD, &key);
	known = bpf_map_lookup_elem(&pp_ct6_v1, &key);
	if (known) {
		forward = *known;
	} else {
		verdict = pp_new_connection6(skb, &packet, &forward);
		if (verdict >= 0)
			return verdict;
	}
	if (forward.flags & PP_SVC_FLAG_MASQUERADE)
		skb->mark |= PP_MARK_MASQUERADE;
	if (pp_rewrite6(skb, &packet, 1, forward.address, forward.port))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

static __always_inline int pp_egress6(struct __sk_buff *skb)
{
	struct pp_packet6 packet = {};
	struct pp_ct6_key key = {};
	struct pp_ct6_value *frontend;

	if (pp_parse6(skb, &packet))
		return TC_ACT_OK;
	pp_ct6_key_of(&packet, PP_CT_REPLY, &key);
	frontend = bpf_map_lookup_elem(&pp_ct6_v1, &key);
	if (!frontend)
		return TC_ACT_OK;
	if (pp_rewrite6(skb, &packet, 0, frontend->address, frontend->port))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("tc")
int pp_tc_ingress(struct __sk_buff *skb)
{
	struct pp_packet packet = {};
	struct pp_ct4_value forward = {};
	struct pp_ct4_value *known;
	int verdict;

	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pp_ingress6(skb);
	if (pp_parse(skb, &packet))
		return TC_ACT_OK;

	struct pp_ct4_key key = pp_ct_key(&packet, PP_CT_FORWARD);
	known = bpf_map_lookup_elem(&pp_ct4_v1, &key);
	if (known) {
		forward = *known;
	} else {
		verdict = pp_new_connection(skb, &packet, &forward);
		if (verdict >= 0)
			return verdict;
	}

	if (forward.flags & PP_SVC_FLAG_MASQUERADE)
		skb->mark |= PP_MARK_MASQUERADE;
	if (pp_rewrite(skb, &packet, 1, forward.address, forward.port))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("tc")
int pp_tc_egress(struct __sk_buff *skb)
{
	struct pp_packet packet = {};
	struct pp_ct4_value *frontend;

	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pp_egress6(skb);
	if (pp_parse(skb, &packet))
		return TC_ACT_OK;

	struct pp_ct4_key key = pp_ct_key(&packet, PP_CT_REPLY);
	frontend = bpf_map_lookup_elem(&pp_ct4_v1, &key);
	if (!frontend)
		return TC_ACT_OK;
	if (pp_rewrite(skb, &packet, 0, frontend->address, frontend->port))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

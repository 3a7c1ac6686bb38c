/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps shared by every ProxyPlanes BPF program, and the only contract between the C side and
 * the loader in src/Backends.Ebpf. Every struct here has a [StructLayout(Sequential)] mirror in
 * src/Backends.Ebpf/MapLayout.cs, and tests/Backends.Ebpf.Tests compiles this header with the host's
 * C compiler to check that sizes and offsets agree. Change both sides together, and bump
 * PP_LAYOUT_VERSION when an existing struct changes: the map names carry it, so a new proxy never
 * reads an old proxy's pinned maps with the wrong layout.
 *
 * Addresses and ports are in network byte order, as the kernel hands them to the programs.
 * Fixed-size, explicitly padded structs only: a hash key's padding is part of the key.
 */
#ifndef PROXYPLANES_H
#define PROXYPLANES_H

#include <linux/types.h>

#define PP_LAYOUT_VERSION 2

/*
 * Map names (the kernel keeps 15 characters) end in the layout version in which the map's key or
 * value last changed: layout 2 made the service and backend addresses 16 bytes (IPv4 and IPv6).
 */
#define PP_MAP_SERVICES "pp_services_v2"
#define PP_MAP_BACKENDS "pp_backends_v2"
#define PP_MAP_AFFINITY "pp_affinity_v1"
#define PP_MAP_UDP_REVNAT "pp_revnat4_v1"
#define PP_MAP_UDP_REVNAT6 "pp_revnat6_v1"

/*
 * Sized for 50,000 services x 5 endpoints (300,000 service entries, 250,000 backends) with headroom.
 * Both maps are BPF_F_NO_PREALLOC: empty, each costs its bucket array (16 bytes x max_entries, 8 MiB
 * here), plus about 90 bytes per entry in use (measured, kernel 6.18). A pin of a different size is not
 * reused (the load fails): run `proxyplanes cleanup --mode=ebpf` after changing these.
 */
#define PP_MAX_SERVICE_ENTRIES 524288 /* master entries plus backend slots */
#define PP_MAX_BACKENDS 524288
#define PP_MAX_AFFINITY 65536
#define PP_MAX_UDP_REVNAT 65536

/*
 * An address of a service frontend or a backend, either family: IPv6 as it is, IPv4 mapped
 * (::ffff:a.b.c.d, so word 3 is the IPv4 address). Network byte order. A node port's key holds the
 * unspecified address of its family: :: for IPv6, ::ffff:0.0.0.0 for IPv4.
 */

/* Flags of a master entry (slot 0). */
#define PP_SVC_FLAG_AFFINITY 0x0001      /* ClientIP session affinity: see pp_affinity_key */
#define PP_SVC_FLAG_NODEPORT 0x0002      /* a node port: key address unspecified, matched on the node's addresses (tc) */
#define PP_SVC_FLAG_EXTERNAL 0x0004      /* an external or load-balancer IP (external traffic) */
#define PP_SVC_FLAG_SOURCE_RANGES 0x0008 /* loadBalancerSourceRanges: a client outside them is dropped (tc) */
#define PP_SVC_FLAG_DROP 0x0010          /* count 0 means drop silently (Core's Drop verdict), not refuse */
#define PP_SVC_FLAG_MASQUERADE 0x0020    /* external clients are masqueraded (Cluster policy) */
#define PP_SVC_FLAG_SOURCE_RANGES_NODE 0x0040 /* with SOURCE_RANGES: a range holds a node IP (Core's SourceRangesAllowNode), so a
                                              * node address passes as a local socket's source (pp_egress) */
#define PP_SVC_FLAG_MASQUERADE_LOCAL 0x0080 /* with MASQUERADE on a cluster IP: local clients (pods) too (Core's AllSources,
                                             * --masquerade-all); the socket hooks leave a pod's socket to tc */

/*
 * Scopes of a frontend. Internal traffic (cluster IPs from pods and the node) and external traffic
 * (node ports, external and load-balancer IPs from off the node) may use different pools under
 * internalTrafficPolicy / externalTrafficPolicy: Local. PP_SCOPE_EXTERNAL entries exist only for a
 * frontend whose external pool differs from its internal one; a program looks them up first for
 * external traffic and falls back to PP_SCOPE_INTERNAL.
 */
#define PP_SCOPE_INTERNAL 0
#define PP_SCOPE_EXTERNAL 1

/*
 * A frontend of a service port, and a slot of it. Slot 0 is the master entry: its value holds the
 * number of backend slots and the flags. Slots 1..count each hold one backend id. A sync writes new
 * backends, then the slots, then the master count last (the one switch point a program can see),
 * and only then deletes slots above the count.
 */
struct pp_service_key {
	__u32 address[4]; /* IPv6, or IPv4 as ::ffff:a.b.c.d; network byte order */
	__u16 port;    /* network byte order */
	__u16 slot;    /* 0: master entry; 1..count: backend slots */
	__u8 proto;    /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP */
	__u8 scope;    /* PP_SCOPE_INTERNAL or PP_SCOPE_EXTERNAL */
	__u16 pad;     /* always 0 */
};

struct pp_service_value {
	__u32 backend_id;       /* slots 1..count: the backend; slot 0: 0 */
	__u16 count;            /* slot 0: backend slots; 0 refuses connections at once */
	__u16 flags;            /* slot 0: PP_SVC_FLAG_* */
	__u32 affinity_timeout; /* slot 0: seconds, when PP_SVC_FLAG_AFFINITY */
	__u32 rev_nat_id;       /* slot 0: this frontend's id, the affinity and reverse NAT key */
};

/* An endpoint, by a backend id the loader assigns (never 0). */
struct pp_backend {
	__u32 address[4]; /* IPv6, or IPv4 as ::ffff:a.b.c.d; network byte order */
	__u16 port;    /* network byte order */
	__u8 proto;
	__u8 flags; /* reserved, 0 */
};

/*
 * Session affinity: a client of a frontend keeps its backend while it comes back within the
 * timeout. In the socket hooks the client is the network namespace (its cookie), as the source
 * address is not yet known at connect time.
 */
struct pp_affinity_key {
	__u64 client;     /* netns cookie in socket hooks */
	__u32 rev_nat_id; /* the frontend */
	__u32 pad;        /* always 0 */
};

struct pp_affinity_value {
	__u64 last_used_ns; /* bpf_ktime_get_ns() when last chosen */
	__u32 backend_id;
	__u32 pad;
};

/*
 * UDP reverse NAT for the socket hooks: a socket that sent to a VIP and got rewritten to a backend
 * sees replies (recvmsg) and its peer (getpeername) as the VIP again. A frontend with source ranges gets an
 * entry for TCP too, its flags PP_SVC_FLAG_SOURCE_RANGES (and _NODE): pp_egress checks the packets' source.
 */
struct pp_revnat4_key {
	__u64 cookie;  /* bpf_get_socket_cookie() of the client socket */
	__u32 address; /* the backend, network byte order */
	__u16 port;    /* network byte order */
	__u16 pad;     /* always 0 */
};

struct pp_revnat4_value {
	__u32 address; /* the service VIP, network byte order */
	__u16 port;    /* network byte order */
	__u16 flags;   /* the master's PP_SVC_FLAG_SOURCE_RANGES and _SOURCE_RANGES_NODE, else 0 */
	__u32 rev_nat_id;
};

/* The same for an IPv6 socket (recvmsg6, getpeername6). */
struct pp_revnat6_key {
	__u64 cookie;     /* bpf_get_socket_cookie() of the client socket */
	__u32 address[4]; /* the backend, network byte order */
	__u16 port;       /* network byte order */
	__u16 pad;        /* always 0 */
	__u32 reserved;   /* always 0 */
};

struct pp_revnat6_value {
	__u32 address[4]; /* the service VIP, network byte order */
	__u16 port;       /* network byte order */
	__u16 flags;      /* as pp_revnat4_value's */
	__u32 rev_nat_id;
};

/* ---- The tc programs (bpf/tc.c): traffic from the network. ---- */

#define PP_MAP_NODE_ADDRESSES "pp_nodeip4_v1"
#define PP_MAP_CONNECTIONS "pp_ct4_v1"
#define PP_MAP_SOURCE_RANGES "pp_srcrange_v1"
#define PP_MAP_NODE_ADDRESSES6 "pp_nodeip6_v1"
#define PP_MAP_CONNECTIONS6 "pp_ct6_v1"
#define PP_MAP_LOCAL_SOURCES "pp_localsrc4_v1"
#define PP_MAP_SOURCE_RANGES6 "pp_srcrange6_v1"
#define PP_MAP_LOCAL_SOURCES6 "pp_localsrc6_v1"
#define PP_MAP_CONFIG "pp_config_v1"

#define PP_MAX_NODE_ADDRESSES 256
#define PP_MAX_CONNECTIONS 262144
#define PP_MAX_SOURCE_RANGES 16384
#define PP_MAX_LOCAL_SOURCES 256

/*
 * skb marks the tc ingress program sets for the fixed nftables table `inet proxyplanes-ebpf`
 * (src/Backends.Ebpf/EbpfNftables.cs): reject a packet to a frontend without endpoints (tcp reset,
 * icmp port-unreachable), masquerade a flow in postrouting.
 */
#define PP_MARK_MASQUERADE 0x00100000
#define PP_MARK_REJECT 0x00200000

/* Affinity from tc: pp_affinity_key.client is the client's IPv4 address with this bit set, so it never equals a netns cookie. */
#define PP_AFFINITY_CLIENT_ADDRESS 0x8000000000000000ULL

/* A node address (pp_nodeip4_v1 key: the IPv4 address, network order): a node port is served on it. */
struct pp_node_address {
	__u32 flags; /* reserved, 0 */
};

/* Directions of a connection entry. */
#define PP_CT_FORWARD 0 /* client -> frontend, as it arrives: the value is the backend */
#define PP_CT_REPLY 1   /* backend -> client, as it leaves: the value is the frontend */

/* A connection, by the 5-tuple of a packet as the program sees it, and its direction. */
struct pp_ct4_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 direction; /* PP_CT_FORWARD or PP_CT_REPLY */
	__u16 pad;      /* always 0 */
};

/* The address to write: the backend (forward) or the frontend the client used (reply). */
struct pp_ct4_value {
	__u32 address;    /* network byte order */
	__u16 port;       /* network byte order */
	__u16 flags;      /* the master entry's PP_SVC_FLAG_* when the connection was made */
	__u32 rev_nat_id; /* the frontend */
	__u32 backend_id; /* forward: the backend chosen; reply: 0 */
};

/* The same for IPv6 (pp_ct6_v1); pp_nodeip6_v1 is keyed by a node IPv6 address (16 bytes) to a pp_node_address. */
struct pp_ct6_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 direction; /* PP_CT_FORWARD or PP_CT_REPLY */
	__u16 pad;      /* always 0 */
};

struct pp_ct6_value {
	__u32 address[4]; /* network byte order */
	__u16 port;       /* network byte order */
	__u16 flags;      /* the master entry's PP_SVC_FLAG_* when the connection was made */
	__u32 rev_nat_id; /* the frontend */
	__u32 backend_id; /* forward: the backend chosen; reply: 0 */
};

/*
 * loadBalancerSourceRanges: an LPM trie keyed by frontend (rev_nat_id, always matched whole) and the
 * client prefix. prefixlen = 32 + the CIDR's length. The value is unused (0).
 */
struct pp_srcrange4_key {
	__u32 prefixlen;  /* 32 + CIDR prefix length */
	__u32 rev_nat_id; /* host byte order; compared as 4 whole bytes */
	__u32 address;    /* network byte order */
};

/* The same for IPv6 frontends (pp_srcrange6_v1): prefixlen = 32 + the CIDR's length (0..128). */
struct pp_srcrange6_key {
	__u32 prefixlen;  /* 32 + CIDR prefix length */
	__u32 rev_nat_id; /* host byte order; compared as 4 whole bytes */
	__u32 address[4]; /* network byte order */
};

/*
 * Local sources (Core's --detect-local-mode by prefix: the cluster CIDR, or this node's pod CIDR): an LPM trie
 * keyed by prefixlen (0..32) and the prefix. tc ingress keeps such a client's source when a cluster IP's
 * masquerade is for off-cluster sources only, and gives it the internal scope (the short-circuit local
 * clients get) first; explain takes such a source for a pod, a process in --bpf-cgroup.
 */
struct pp_localsrc4_key {
	__u32 prefixlen; /* 0..32 */
	__u32 address;   /* network byte order */
};

/* The value of a local-sources entry. */
#define PP_LOCAL_SOURCE_MASQUERADE 0x0001 /* --masquerade-all: masquerade these sources too */

struct pp_localsrc4_value {
	__u32 flags; /* PP_LOCAL_SOURCE_* */
};

/* The IPv6 local sources (pp_localsrc6_v1): prefixlen 0..128; the value is a struct pp_localsrc4_value too. */
struct pp_localsrc6_key {
	__u32 prefixlen;  /* 0..128 */
	__u32 address[4]; /* network byte order */
};

/*
 * pp_config_v1 (array, one element, key 0): what the socket hooks must know of the node. node_netns is the network
 * namespace cookie of the node (SO_NETNS_COOKIE of a socket the daemon opens there); a socket of another namespace is
 * a pod's. 0 (never written) takes every socket for the node's: no socket is left to tc.
 */
struct pp_config {
	__u64 node_netns;
};

/* ---- Destroying connected UDP sockets left on a gone backend (bpf/sockdestroy.c). ---- */

#define PP_MAP_SOCK_DELETIONS "pp_sockdel_v1"
#define PP_MAX_SOCK_DELETIONS 65536

/*
 * One deletion of a sync as the socket pass reads it: a socket connected through the hooks to backend
 * for frontend goes. An all-zero frontend address is any address of that port (a node port); an all-zero
 * backend with port 0 is any backend (the frontend is gone). IPv4 addresses mapped (::ffff:a.b.c.d). The
 * value (__u32) is unused, 0.
 */
struct pp_sockdel_key {
	__u32 frontend[4];
	__u32 backend[4];
	__u16 frontend_port; /* network byte order */
	__u16 backend_port;  /* network byte order; 0 with an all-zero backend */
};

/*
 * The frontends a sync took out of Drop (pp_sockvip_v1): master keys (slot 0, scope internal) whose entry had
 * PP_SVC_FLAG_DROP and no longer has. connect4/6 left a socket asking such a frontend on the VIP (for pp_egress to
 * drop); the socket pass destroys a TCP one still in SYN_SENT and a UDP one connected to it. A node port's key
 * (the family's unspecified address) names every node address. The value (__u32) is unused, 0.
 */
#define PP_MAP_SOCK_REOPENED "pp_sockvip_v1"

#endif /* PROXYPLANES_H */

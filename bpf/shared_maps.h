/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps bpf/sock.c and bpf/tc.c both use, defined once: the loader loads sock.o first and hands
 * these maps to tc.o (libbpf's bpf_map__reuse_fd), which needs the same type, sizes and flags.
 * Include after <bpf/bpf_helpers.h> and "proxyplanes.h".
 */
#ifndef PROXYPLANES_SHARED_MAPS_H
#define PROXYPLANES_SHARED_MAPS_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_SERVICE_ENTRIES);
	__type(key, struct pp_service_key);
	__type(value, struct pp_service_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_services_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct pp_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_backends_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PP_MAX_AFFINITY);
	__type(key, struct pp_affinity_key);
	__type(value, struct pp_affinity_value);
} pp_affinity_v1 SEC(".maps");

/* The node addresses a node port is served on: tc ingress and the socket hooks both look node ports up. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_NODE_ADDRESSES);
	__type(key, __u32);
	__type(value, struct pp_node_address);
} pp_nodeip4_v1 SEC(".maps");

/* The node IPv6 addresses a node port is served on (link-local ones never). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_NODE_ADDRESSES);
	__uint(key_size, 16);
	__type(value, struct pp_node_address);
} pp_nodeip6_v1 SEC(".maps");

/* Whether the address (16 bytes, IPv4 mapped) is one a node port is served on (pp_nodeip4_v1 or pp_nodeip6_v1). Needs address.h. */
static __always_inline int pp_node_address(const __u32 address[4])
{
	if (pp_address_mapped4(address))
		return bpf_map_lookup_elem(&pp_nodeip4_v1, &address[3]) != 0;
	return bpf_map_lookup_elem(&pp_nodeip6_v1, address) != 0;
}

#endif /* PROXYPLANES_SHARED_MAPS_H */

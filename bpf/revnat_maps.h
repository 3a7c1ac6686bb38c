/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The socket hooks' UDP reverse maps (socket cookie + backend -> frontend), defined once: bpf/sock.c
 * owns and pins them; bpf/sockdestroy.c gets them from the loader (libbpf's bpf_map__reuse_fd), which
 * needs the same type, sizes and flags. Include after <bpf/bpf_helpers.h> and "proxyplanes.h".
 */
#ifndef PROXYPLANES_REVNAT_MAPS_H
#define PROXYPLANES_REVNAT_MAPS_H

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PP_MAX_UDP_REVNAT);
	__type(key, struct pp_revnat4_key);
	__type(value, struct pp_revnat4_value);
} pp_revnat4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PP_MAX_UDP_REVNAT);
	__type(key, struct pp_revnat6_key);
	__type(value, struct pp_revnat6_value);
} pp_revnat6_v1 SEC(".maps");

#endif /* PROXYPLANES_REVNAT_MAPS_H */

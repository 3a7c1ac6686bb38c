/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * loadBalancerSourceRanges, one LPM trie per family (see proxyplanes.h: pp_srcrange4_key, pp_srcrange6_key).
 * Made and pinned by sock.c's object (pp_egress checks the sources of the node's and pods' sockets); tc.c's
 * object reuses them (off-node clients). Include after proxyplanes.h.
 */
#ifndef PROXYPLANES_SRCRANGE_MAPS_H
#define PROXYPLANES_SRCRANGE_MAPS_H

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PP_MAX_SOURCE_RANGES);
	__type(key, struct pp_srcrange4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_srcrange_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PP_MAX_SOURCE_RANGES);
	__type(key, struct pp_srcrange6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_srcrange6_v1 SEC(".maps");

#endif /* PROXYPLANES_SRCRANGE_MAPS_H */

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Destroying the connected UDP sockets a sync left on a gone backend. connect4/connect6 (bpf/sock.c)
 * rewrite a service frontend to a backend once, at connect time: a connected UDP socket keeps that
 * backend for its whole life, even after the endpoint left the service (kube-proxy's modes have
 * `conntrack -D` for the equivalent). An `iter/udp` program, run from user space after such a sync,
 * walks the UDP sockets of one network namespace and calls the bpf_sock_destroy kfunc (kernel >= 6.5)
 * on each socket that
 *   - is connected (a destination address and port), and
 *   - was connected through the hooks to that very destination: pp_revnat4_v1 / pp_revnat6_v1 hold
 *     {socket cookie, backend address, port} -> the frontend (written by connect and sendmsg), and
 *   - whose {frontend, backend} pp_sockdel_v1 names (the deletions of the sync; an all-zero frontend
 *     address is any frontend of that port: a node port; an all-zero backend, port 0, is any backend:
 *     a frontend gone).
 * The kernel then aborts the socket (udp_abort: sk_err = ECONNABORTED, disconnected); the application's
 * next recv fails with ECONNABORTED and its next connect goes through the hooks again, to a live backend.
 * A socket connected to a backend directly (not through a frontend) has no reverse entry and is kept.
 *
 * Its own ELF object: loading fails on a kernel without the kfunc (libbpf: the extern is not in the
 * kernel's BTF), and the socket hooks must load there all the same. No vmlinux.h: the few kernel types
 * read here are declared below with preserve_access_index, so libbpf relocates every field offset
 * against the running kernel's BTF (CO-RE).
 */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proxyplanes.h"

#define PP_AF_INET 2
#define PP_AF_INET6 10
#define PP_MAPPED4_WORD2 bpf_htonl(0x0000ffff)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The kernel's types, as far as they are read here (field names as in the kernel; offsets from its BTF). */
struct pp_in6_addr {
	__u32 words[4];
};

struct sock_common {
	__u32 skc_daddr;
	__u16 skc_dport;
	unsigned short skc_family;
	struct pp_in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* The socket hooks' reverse maps, handed over by the loader (bpf_map__reuse_fd). */
#include "revnat_maps.h"

/* The {frontend, backend} pairs whose sockets go: filled before a pass, emptied after it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_SOCK_DELETIONS);
	__type(key, struct pp_sockdel_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_sockdel_v1 SEC(".maps");

/* A deletion names this pair: exactly, or by a wildcard frontend address (node port) or backend (frontend gone). */
static __always_inline int pp_deleted(struct pp_sockdel_key *key)
{
	__u32 backend[4] = { key->backend[0], key->backend[1], key->backend[2], key->backend[3] };
	__u16 backend_port = key->backend_port;

	if (bpf_map_lookup_elem(&pp_sockdel_v1, key))
		return 1;
	__builtin_memset(key->backend, 0, sizeof(key->backend));
	key->backend_port = 0;
	if (bpf_map_lookup_elem(&pp_sockdel_v1, key))
		return 1;
	__builtin_memset(key->frontend, 0, sizeof(key->frontend));
	if (bpf_map_lookup_elem(&pp_sockdel_v1, key))
		return 1;
	key->backend[0] = backend[0];
	key->backend[1] = backend[1];
	key->backend[2] = backend[2];
	key->backend[3] = backend[3];
	key->backend_port = backend_port;
	return bpf_map_lookup_elem(&pp_sockdel_v1, key) != 0;
}

SEC("iter/udp")
int pp_sock_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct pp_sockdel_key key = {};
	__u64 cookie;
	__u16 port;

	if (!sk)
		return 0;
	port = sk->__sk_common.skc_dport;
	if (port == 0)
		return 0; /* not connected: every sendto goes through sendmsg4/6 again */
	cookie = bpf_get_socket_cookie(sk);
	key.backend_port = port;

	if (sk->__sk_common.skc_family == PP_AF_INET) {
		struct pp_revnat4_key revnat = { .cookie = cookie, .address = sk->__sk_common.skc_daddr, .port = port };
		struct pp_revnat4_value *vip = bpf_map_lookup_elem(&pp_revnat4_v1, &revnat);

		if (!vip)
			return 0;
		key.frontend[2] = PP_MAPPED4_WORD2;
		key.frontend[3] = vip->address;
		key.frontend_port = vip->port;
		key.backend[2] = PP_MAPPED4_WORD2;
		key.backend[3] = revnat.address;
	} else if (sk->__sk_common.skc_family == PP_AF_INET6) {
		struct pp_revnat6_key revnat = { .cookie = cookie, .port = port };
		struct pp_revnat6_value *vip;

		revnat.address[0] = sk->__sk_common.skc_v6_daddr.words[0];
		revnat.address[1] = sk->__sk_common.skc_v6_daddr.words[1];
		revnat.address[2] = sk->__sk_common.skc_v6_daddr.words[2];
		revnat.address[3] = sk->__sk_common.skc_v6_daddr.words[3];
		vip = bpf_map_lookup_elem(&pp_revnat6_v1, &revnat);
		if (!vip)
			return 0;
		key.frontend[0] = vip->address[0];
		key.frontend[1] = vip->address[1];
		key.frontend[2] = vip->address[2];
		key.frontend[3] = vip->address[3];
		key.frontend_port = vip->port;
		key.backend[0] = revnat.address[0];
		key.backend[1] = revnat.address[1];
		key.backend[2] = revnat.address[2];
		key.backend[3] = revnat.address[3];
	} else {
		return 0;
	}

	if (!pp_deleted(&key))
		return 0;
	/* The cookie of each destroyed socket goes to the reader (user space counts them). */
	if (bpf_sock_destroy((struct sock_common *)sk) == 0)
		bpf_seq_write(ctx->meta->seq, &cookie, sizeof(cookie));
	return 0;
}

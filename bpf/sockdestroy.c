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
 * The same pass, and an `iter/tcp` one, destroy the sockets a Drop verdict left on a VIP (connect4/6 leave a socket
 * asking a frontend whose master has PP_SVC_FLAG_DROP on the VIP, and pp_egress drops its packets) once a sync took
 * that frontend out of Drop (pp_sockvip_v1): nothing rewrites the VIP after connect, so a TCP socket still in SYN_SENT
 * would retransmit its SYN to the VIP until it times out, and a connected UDP socket would keep sending there. A TCP
 * socket in any other state is kept: one that got established through the VIP was DNATed on the way (tc ingress on
 * a pod's veth) and works. The application sees ECONNABORTED at once (connect fails; recv fails) and its next connect
 * goes through the hooks, which now pick a backend.
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
#include "address.h"

#define PP_AF_INET 2
#define PP_AF_INET6 10
#define PP_MAPPED4_WORD2 bpf_htonl(0x0000ffff)
#define PP_IPPROTO_TCP 6
#define PP_IPPROTO_UDP 17
#define PP_TCP_SYN_SENT 2

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The kernel's types, as far as they are read here (field names as in the kernel; offsets from its BTF). */
struct pp_in6_addr {
	__u32 words[4];
};

struct sock_common {
	__u32 skc_daddr;
	__u16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
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

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* The socket hooks' maps, handed over by the loader (bpf_map__reuse_fd): the reverse maps, and the node addresses. */
#include "revnat_maps.h"
#include "shared_maps.h"

/* The {frontend, backend} pairs whose sockets go: filled before a pass, emptied after it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_SOCK_DELETIONS);
	__type(key, struct pp_sockdel_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_sockdel_v1 SEC(".maps");

/* The frontends taken out of Drop by the sync: filled before a pass, emptied after it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PP_MAX_SOCK_DELETIONS);
	__type(key, struct pp_service_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pp_sockvip_v1 SEC(".maps");

/* The socket's destination (family, address, port) as a 16-byte address: IPv4 mapped. 0 for another family. */
static __always_inline int pp_destination(struct sock_common *sk, __u32 address[4])
{
	if (sk->skc_family == PP_AF_INET) {
		pp_address_from4(address, sk->skc_daddr);
		return 1;
	}
	if (sk->skc_family != PP_AF_INET6)
		return 0;
	address[0] = sk->skc_v6_daddr.words[0];
	address[1] = sk->skc_v6_daddr.words[1];
	address[2] = sk->skc_v6_daddr.words[2];
	address[3] = sk->skc_v6_daddr.words[3];
	return 1;
}

/*
 * Whether the socket is connected (or connecting) to a frontend the sync took out of Drop: its destination as the
 * master key connect4/6 looked up, or, on a node address, the family's node port key (as pp_pick finds it).
 */
static __always_inline int pp_reopened(struct sock_common *sk, __u8 proto)
{
	struct pp_service_key key = { .port = sk->skc_dport, .proto = proto, .scope = PP_SCOPE_INTERNAL };

	if (!pp_destination(sk, key.address))
		return 0;
	if (bpf_map_lookup_elem(&pp_sockvip_v1, &key))
		return 1;
	if (!pp_node_address(key.address))
		return 0;
	pp_address_any(key.address);
	return bpf_map_lookup_elem(&pp_sockvip_v1, &key) != 0;
}

/* Destroys the socket and, when the kernel did, writes its cookie for the reader (user space counts them). */
static __always_inline void pp_destroy(struct bpf_iter_meta *meta, struct sock_common *sk, __u64 cookie)
{
	if (bpf_sock_destroy(sk) == 0)
		bpf_seq_write(meta->seq, &cookie, sizeof(cookie));
}

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
	if (pp_reopened(&sk->__sk_common, PP_IPPROTO_UDP)) {
		pp_destroy(ctx->meta, &sk->__sk_common, cookie);
		return 0;
	}
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

	if (pp_deleted(&key))
		pp_destroy(ctx->meta, &sk->__sk_common, cookie);
	return 0;
}

/* TCP sockets still in SYN_SENT to a frontend the sync took out of Drop (every other TCP socket is kept). */
SEC("iter/tcp")
int pp_sock_destroy_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;

	if (!sk || sk->skc_state != PP_TCP_SYN_SENT)
		return 0;
	if (pp_reopened(sk, PP_IPPROTO_TCP))
		pp_destroy(ctx->meta, sk, bpf_get_socket_cookie(sk));
	return 0;
}

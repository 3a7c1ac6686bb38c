/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The 16-byte addresses of pp_service_key, pp_backend and the IPv6 keys: IPv4 is held mapped (::ffff:a.b.c.d).
 * Family-neutral helpers both programs use.
 * Include after <bpf/bpf_endian.h>.
 */
#ifndef PROXYPLANES_ADDRESS_H
#define PROXYPLANES_ADDRESS_H

/* Writes the IPv4 address ip4 (network order) as ::ffff:ip4. */
static __always_inline void pp_address_from4(__u32 address[4], __u32 ip4)
{
	address[0] = 0;
	address[1] = 0;
	address[2] = bpf_htonl(0x0000ffff);
	address[3] = ip4;
}

/* Copies a 16-byte address. */
static __always_inline void pp_address_copy(__u32 to[4], const __u32 from[4])
{
	to[0] = from[0];
	to[1] = from[1];
	to[2] = from[2];
	to[3] = from[3];
}

/* Whether two 16-byte addresses are the same. */
static __always_inline int pp_address_equal(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* An IPv4 address held mapped (::ffff:a.b.c.d). */
static __always_inline int pp_address_mapped4(const __u32 address[4])
{
	return address[0] == 0 && address[1] == 0 && address[2] == bpf_htonl(0x0000ffff);
}

/* The key of the family's node ports: ::ffff:0.0.0.0 for IPv4, :: for IPv6. */
static __always_inline void pp_address_any(__u32 address[4])
{
	if (pp_address_mapped4(address))
		address[3] = 0;
	else
		address[0] = address[1] = address[2] = address[3] = 0;
}

#endif /* PROXYPLANES_ADDRESS_H */

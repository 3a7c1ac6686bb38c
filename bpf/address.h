/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The 16-byte addresses of pp_service_key and pp_backend: IPv4 is held mapped (::ffff:a.b.c.d).
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

#endif /* PROXYPLANES_ADDRESS_H */

/* The socket address both test clients (udp_holder.c, drop_client.c) parse from their arguments: an address with
 * ':' is IPv6. Include after <arpa/inet.h>, <stdlib.h>, <string.h>, <sys/socket.h>. */
#ifndef PP_TEST_ADDRESS_H
#define PP_TEST_ADDRESS_H

union address {
	struct sockaddr any;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

static socklen_t parse(union address *to, const char *text, const char *port)
{
	memset(to, 0, sizeof *to);
	if (strchr(text, ':')) {
		to->v6.sin6_family = AF_INET6;
		to->v6.sin6_port = htons((unsigned short)atoi(port));
		if (inet_pton(AF_INET6, text, &to->v6.sin6_addr) != 1)
			exit(2);
		return sizeof to->v6;
	}
	to->v4.sin_family = AF_INET;
	to->v4.sin_port = htons((unsigned short)atoi(port));
	if (inet_pton(AF_INET, text, &to->v4.sin_addr) != 1)
		exit(2);
	return sizeof to->v4;
}

#endif /* PP_TEST_ADDRESS_H */

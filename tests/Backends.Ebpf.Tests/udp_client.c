/* A UDP client for SocketHookTests: "sendto" (unconnected) or "connect" (connect, getpeername, send),
 * then recvfrom with the sender's address. Prints what the application sees, one line per step.
 * An address with ':' is IPv6 (an AF_INET6 socket; printed as [address]:port), else IPv4. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

union address {
	struct sockaddr any;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

static void print_address(const char *what, const union address *address)
{
	char text[INET6_ADDRSTRLEN];
	if (address->any.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &address->v6.sin6_addr, text, sizeof text);
		printf("%s [%s]:%d\n", what, text, ntohs(address->v6.sin6_port));
	} else {
		inet_ntop(AF_INET, &address->v4.sin_addr, text, sizeof text);
		printf("%s %s:%d\n", what, text, ntohs(address->v4.sin_port));
	}
}

int main(int argc, char **argv)
{
	union address to = {}, from;
	socklen_t to_length, length = sizeof from;
	struct timeval timeout = { .tv_sec = 2 };
	char buffer[256];
	ssize_t received;
	int fd;

	if (argc != 4)
		return 2;
	if (strchr(argv[2], ':')) {
		to.v6.sin6_family = AF_INET6;
		to.v6.sin6_port = htons((unsigned short)atoi(argv[3]));
		if (inet_pton(AF_INET6, argv[2], &to.v6.sin6_addr) != 1)
			return 2;
		to_length = sizeof to.v6;
	} else {
		to.v4.sin_family = AF_INET;
		to.v4.sin_port = htons((unsigned short)atoi(argv[3]));
		if (inet_pton(AF_INET, argv[2], &to.v4.sin_addr) != 1)
			return 2;
		to_length = sizeof to.v4;
	}
	fd = socket(to.any.sa_family, SOCK_DGRAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

	if (strcmp(argv[1], "connect") == 0) {
		if (connect(fd, &to.any, to_length) != 0) {
			printf("connect: %s\n", strerror(errno));
			return 0;
		}
		if (getpeername(fd, &from.any, &length) != 0) {
			printf("getpeername: %s\n", strerror(errno));
			return 0;
		}
		print_address("peer", &from);
		if (send(fd, "hi", 2, 0) < 0) {
			printf("send: %s\n", strerror(errno));
			return 0;
		}
	} else if (sendto(fd, "hi", 2, 0, &to.any, to_length) < 0) {
		printf("sendto: %s\n", strerror(errno));
		return 0;
	}

	length = sizeof from;
	received = recvfrom(fd, buffer, sizeof buffer - 1, 0, &from.any, &length);
	if (received < 0) {
		printf("recvfrom: %s\n", strerror(errno));
		return 0;
	}
	buffer[received] = 0;
	printf("reply %s\n", buffer);
	print_address("from", &from);
	return 0;
}

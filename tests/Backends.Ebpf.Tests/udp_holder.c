/* A client for SocketDestroyTests that keeps its sockets across a sync:
 *   udp_holder COUNT VIP PORT DIRECT_ADDRESS DIRECT_PORT TCP_VIP TCP_PORT GO_FILE
 * COUNT UDP sockets connected to VIP:PORT (the hooks pick each one's backend), one UDP socket connected to
 * DIRECT_ADDRESS:DIRECT_PORT (a backend, not through a frontend) and one TCP connection to TCP_VIP:TCP_PORT, each
 * asked once ("before N NAME"); then "ready", and it waits until GO_FILE exists (at most 30 s; the test syncs meanwhile). Then each
 * socket is asked again: a UDP socket the kernel aborted reports "after N aborted" (recv: ECONNABORTED), connects to
 * the VIP again and reports "after N reconnected NAME"; one left alone reports "after N kept NAME". Servers answer
 * every datagram (and every TCP line) with their name. An address with ':' is IPv6. Every wait is bounded (2 s). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_SOCKETS 64

#include "test_address.h"

static int open_connected(int type, const union address *to, socklen_t length)
{
	struct timeval timeout = { .tv_sec = 2 };
	int fd = socket(to->any.sa_family, type, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
	if (connect(fd, &to->any, length) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends one datagram (or line) and prints "WHAT NAME", or "WHAT STEP: error". */
static void ask(int fd, const char *what, const char *message)
{
	char buffer[256];
	ssize_t received;

	if (send(fd, message, strlen(message), 0) < 0) {
		printf("%s send: %s\n", what, strerror(errno));
		return;
	}
	received = recv(fd, buffer, sizeof buffer - 1, 0);
	if (received < 0) {
		printf("%s recv: %s\n", what, strerror(errno));
		return;
	}
	buffer[received] = 0;
	buffer[strcspn(buffer, "\n")] = 0;
	printf("%s %s\n", what, buffer);
}

/* After the sync: aborted (then reconnected through the VIP) or kept. */
static void again(int fd, const char *label, const union address *reconnect, socklen_t length)
{
	char what[64], buffer[16];

	if (recv(fd, buffer, sizeof buffer, MSG_DONTWAIT) < 0 && errno == ECONNABORTED) {
		printf("after %s aborted\n", label);
		snprintf(what, sizeof what, "after %s reconnected", label);
		if (connect(fd, &reconnect->any, length) != 0) {
			printf("%s connect: %s\n", what, strerror(errno));
			return;
		}
		ask(fd, what, "hi");
		return;
	}
	snprintf(what, sizeof what, "after %s kept", label);
	ask(fd, what, "hi");
}

int main(int argc, char **argv)
{
	union address vip, direct, tcp_vip;
	socklen_t vip_length, direct_length, tcp_length;
	int count, fds[MAX_SOCKETS], direct_fd, tcp_fd, i;
	char what[64];

	if (argc != 9)
		return 2;
	count = atoi(argv[1]);
	if (count < 1 || count > MAX_SOCKETS)
		return 2;
	vip_length = parse(&vip, argv[2], argv[3]);
	direct_length = parse(&direct, argv[4], argv[5]);
	tcp_length = parse(&tcp_vip, argv[6], argv[7]);
	setvbuf(stdout, NULL, _IOLBF, 0);

	for (i = 0; i < count; i++) {
		snprintf(what, sizeof what, "before %d", i);
		fds[i] = open_connected(SOCK_DGRAM, &vip, vip_length);
		if (fds[i] < 0) {
			printf("%s connect: %s\n", what, strerror(errno));
			return 1;
		}
		ask(fds[i], what, "hi");
	}
	direct_fd = open_connected(SOCK_DGRAM, &direct, direct_length);
	tcp_fd = open_connected(SOCK_STREAM, &tcp_vip, tcp_length);
	if (direct_fd < 0 || tcp_fd < 0) {
		printf("connect: %s\n", strerror(errno));
		return 1;
	}
	ask(direct_fd, "before direct", "hi");
	ask(tcp_fd, "before tcp", "hi\n");

	printf("ready\n");
	for (i = 0; access(argv[8], F_OK) != 0; i++) {
		if (i == 3000) {
			printf("no %s within 30 s\n", argv[8]);
			return 1;
		}
		usleep(10000);
	}

	for (i = 0; i < count; i++) {
		snprintf(what, sizeof what, "%d", i);
		again(fds[i], what, &vip, vip_length);
	}
	again(direct_fd, "direct", &direct, direct_length);
	ask(tcp_fd, "after tcp", "hi\n");
	return 0;
}

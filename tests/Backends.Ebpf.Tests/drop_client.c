/* A client for SocketDestroyTests' Drop case, whose sockets ask frontends while their verdict is Drop:
 *   drop_client TCP_VIP TCP_OTHER TCP_PORT UDP_VIP UDP_OTHER UDP_PORT GO_FILE
 * "t1" connects (non-blocking) to TCP_VIP:TCP_PORT and "t2" to TCP_OTHER:TCP_PORT; the SYNs are dropped, so both stay
 * in SYN_SENT. "u1" connects a UDP socket to UDP_VIP:UDP_PORT and "u2" to UDP_OTHER:UDP_PORT, each sending one
 * datagram (dropped). Then "ready", and it waits until GO_FILE exists (at most 30 s; the test syncs meanwhile). Then:
 * "t1 ERRNO" / "t2 ERRNO": the connect's outcome (SO_ERROR after poll: "pending" when it is still connecting after
 * 2 s, "connected" when it succeeded, else the errno's name); "u1 ERRNO" / "u2 ERRNO": a non-blocking recv's errno
 * (EAGAIN: nothing happened to the socket; ECONNABORTED: destroyed). Then "again tcp NAME" / "again udp NAME": a
 * new connect to TCP_VIP and UDP_VIP and the server's answer (or "again tcp ERRNO"). Every wait is bounded (2 s). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "test_address.h"

static const char *name(int error)
{
	const char *text = strerrorname_np(error);
	return text ? text : "unknown";
}

static int open_socket(const union address *to, int type)
{
	struct timeval two = { .tv_sec = 2 };
	int fd = socket(to->any.sa_family, type, 0);

	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &two, sizeof two);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &two, sizeof two);
	return fd;
}

/* A non-blocking connect left in SYN_SENT (the SYN is dropped). */
static int connecting(const char *vip, const char *port)
{
	union address to;
	socklen_t length = parse(&to, vip, port);
	int fd = open_socket(&to, SOCK_STREAM);

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (connect(fd, &to.any, length) == 0 || errno != EINPROGRESS) {
		printf("connect %s: %s\n", vip, name(errno));
		exit(1);
	}
	return fd;
}

static int connected_udp(const char *vip, const char *port)
{
	union address to;
	socklen_t length = parse(&to, vip, port);
	int fd = open_socket(&to, SOCK_DGRAM);

	if (connect(fd, &to.any, length) != 0 || send(fd, "x", 1, 0) != 1) {
		printf("udp %s: %s\n", vip, name(errno));
		exit(1);
	}
	return fd;
}

static void outcome(const char *label, int fd)
{
	struct pollfd wait = { .fd = fd, .events = POLLOUT };
	int error = 0;
	socklen_t size = sizeof error;

	if (poll(&wait, 1, 2000) == 0) {
		printf("%s pending\n", label);
		return;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
	printf("%s %s\n", label, error ? name(error) : "connected");
}

static void received(const char *label, int fd)
{
	char buffer[64];

	if (recv(fd, buffer, sizeof buffer, MSG_DONTWAIT) >= 0)
		printf("%s data\n", label);
	else
		printf("%s %s\n", label, name(errno));
}

/* A new socket to the VIP, one request, the server's answer. */
static void again(const char *kind, const char *vip, const char *port, int type)
{
	union address to;
	socklen_t length = parse(&to, vip, port);
	int fd = open_socket(&to, type);
	char buffer[64];
	ssize_t got;

	if (connect(fd, &to.any, length) != 0 || send(fd, "x\n", 2, 0) != 2 || (got = recv(fd, buffer, sizeof buffer - 1, 0)) <= 0) {
		printf("again %s %s\n", kind, name(errno));
		close(fd);
		return;
	}
	buffer[got] = 0;
	buffer[strcspn(buffer, "\n")] = 0;
	printf("again %s %s\n", kind, buffer);
	close(fd);
}

int main(int argc, char **argv)
{
	int t1, t2, u1, u2, i;

	if (argc != 8) {
		fprintf(stderr, "usage: drop_client TCP_VIP TCP_OTHER TCP_PORT UDP_VIP UDP_OTHER UDP_PORT GO_FILE\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	t1 = connecting(argv[1], argv[3]);
	t2 = connecting(argv[2], argv[3]);
	u1 = connected_udp(argv[4], argv[6]);
	u2 = connected_udp(argv[5], argv[6]);
	printf("ready\n");
	for (i = 0; access(argv[7], F_OK) != 0; i++) {
		if (i == 3000) {
			printf("no go within 30 s\n");
			return 1;
		}
		usleep(10000);
	}
	outcome("t1", t1);
	outcome("t2", t2);
	received("u1", u1);
	received("u2", u2);
	again("tcp", argv[1], argv[3], SOCK_STREAM);
	again("udp", argv[4], argv[6], SOCK_DGRAM);
	close(t1);
	close(t2);
	close(u1);
	close(u2);
	return 0;
}

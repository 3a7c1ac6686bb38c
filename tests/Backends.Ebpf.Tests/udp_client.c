/* A UDP client for SocketHookTests: "sendto" (unconnected) or "connect" (connect, getpeername, send),
 * then recvfrom with the sender's address. Prints what the application sees, one line per step. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void print_address(const char *what, const struct sockaddr_in *address)
{
	char text[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &address->sin_addr, text, sizeof text);
	printf("%s %s:%d\n", what, text, ntohs(address->sin_port));
}

int main(int argc, char **argv)
{
	struct sockaddr_in to = { .sin_family = AF_INET }, from;
	socklen_t length = sizeof from;
	struct timeval timeout = { .tv_sec = 2 };
	char buffer[256];
	ssize_t received;
	int fd;

	if (argc != 4)
		return 2;
	to.sin_port = htons((unsigned short)atoi(argv[3]));
	inet_pton(AF_INET, argv[2], &to.sin_addr);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

	if (strcmp(argv[1], "connect") == 0) {
		if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
			printf("connect: %s\n", strerror(errno));
			return 0;
		}
		if (getpeername(fd, (struct sockaddr *)&from, &length) != 0) {
			printf("getpeername: %s\n", strerror(errno));
			return 0;
		}
		print_address("peer", &from);
		if (send(fd, "hi", 2, 0) < 0) {
			printf("send: %s\n", strerror(errno));
			return 0;
		}
	} else if (sendto(fd, "hi", 2, 0, (struct sockaddr *)&to, sizeof to) < 0) {
		printf("sendto: %s\n", strerror(errno));
		return 0;
	}

	length = sizeof from;
	received = recvfrom(fd, buffer, sizeof buffer - 1, 0, (struct sockaddr *)&from, &length);
	if (received < 0) {
		printf("recvfrom: %s\n", strerror(errno));
		return 0;
	}
	buffer[received] = 0;
	printf("reply %s\n", buffer);
	print_address("from", &from);
	return 0;
}

/*
 * The library-independent half of the TLS echo peers (ossl_echo_peer.c,
 * bench/gnutls_echo_peer.c and bench/nss_echo_client.c, one protocol on
 * three libraries): sockets on 127.0.0.1, the request, the clock and the
 * client's report.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline struct sockaddr_in echo_loopback(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	return sa;
}

/* Each message goes out at once (no wait for the last one's ACK): timed
 * rounds measure the calls, not delayed ACKs. */
static inline void echo_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A socket listening on 127.0.0.1:PORT, "listening" printed; -1 on failure. */
static inline int echo_listen(int port)
{
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = echo_loopback(port);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 8) != 0)
		return -1;
	printf("listening\n");
	fflush(stdout);
	return lfd;
}

/* A socket connected to 127.0.0.1:PORT; -1 on failure. */
static inline int echo_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = echo_loopback(port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return -1;
	echo_nodelay(fd);
	return fd;
}

/* "SIZE\n" and SIZE pattern bytes ("req" + "0123456789" repeated), with
 * room for the echo after; *head is the line's length. */
static inline char *echo_request(size_t size, int *head)
{
	static const char unit[] = "req0123456789";
	char *msg = malloc(size + 32);
	*head = snprintf(msg, 32, "%zu\n", size);
	for (size_t i = 0; i < size; i++)
		msg[*head + i] = unit[i % (sizeof(unit) - 1)];
	return msg;
}

static inline long long echo_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* The client's report: its local port, then (timed rounds) their µs. */
static inline void echo_report(int fd, size_t rounds, long long took)
{
	struct sockaddr_in local;
	socklen_t sl = sizeof(local);
	getsockname(fd, (struct sockaddr *)&local, &sl);
	printf("%d\n", ntohs(local.sin_port));
	if (rounds)
		printf("%lld\n", took);
	fflush(stdout);
}

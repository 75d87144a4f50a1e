/*
 * A TLS echo client or server on GnuTLS, for bench/tls_call_cost.sh: the
 * protocol and command line of tests/programs/ossl_echo_peer.c, so GnuTLS's
 * calls are timed as the OpenSSL API's are (gnutls_record_send and
 * gnutls_record_recv at both ends, one message in flight).
 *
 *   gnutls_echo_peer server PORT CERT KEY COUNT
 *   gnutls_echo_peer client PORT SIZE ROUNDS
 *
 * The server prints "listening" and serves COUNT connections one after
 * another: each starts with a line "N\n", whose N following bytes are
 * echoed back as they are read. The client sends "SIZE\n", then the SIZE
 * pattern bytes as ROUNDS messages, each once the echo of the one before is
 * read, checks the echo and prints its local port and the microseconds the
 * rounds took. The client does not check the server's certificate.
 */
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 14)

static void die(const char *what, int err)
{
	fprintf(stderr, "gnutls_echo_peer: %s%s%s\n", what, err ? ": " : "", err ? gnutls_strerror(err) : "");
	exit(1);
}

static void write_all(gnutls_session_t s, const char *p, size_t n)
{
	while (n) {
		ssize_t w = gnutls_record_send(s, p, n < CHUNK ? n : CHUNK);
		if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
			continue;
		if (w <= 0)
			die("gnutls_record_send", (int)w);
		p += w;
		n -= (size_t)w;
	}
}

static size_t read_some(gnutls_session_t s, char *buf, size_t want)
{
	for (;;) {
		ssize_t r = gnutls_record_recv(s, buf, want < CHUNK ? want : CHUNK);
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r <= 0)
			die("gnutls_record_recv", (int)r);
		return (size_t)r;
	}
}

/* A session on socket `fd`, its handshake done. */
static gnutls_session_t session(int fd, unsigned flags, gnutls_certificate_credentials_t cred)
{
	int one = 1, r;
	gnutls_session_t s;
	/* Each message goes out at once: rounds time the calls, not delayed ACKs. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((r = gnutls_init(&s, flags)) < 0 || (r = gnutls_set_default_priority(s)) < 0 ||
	    (r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred)) < 0)
		die("session", r);
	gnutls_transport_set_int(s, fd);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0)
		die("handshake", r);
	return s;
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	return sa;
}

static int serve(int port, const char *cert, const char *key, int count)
{
	gnutls_certificate_credentials_t cred;
	int r, one = 1;
	if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0 ||
	    (r = gnutls_certificate_set_x509_key_file(cred, cert, key, GNUTLS_X509_FMT_PEM)) < 0)
		die("server certificate and key", r);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = loopback(port);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 8) != 0)
		die("bind/listen", 0);
	printf("listening\n");
	fflush(stdout);
	static char buf[CHUNK];
	for (int i = 0; i < count; i++) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			die("accept", 0);
		gnutls_session_t s = session(fd, GNUTLS_SERVER, cred);
		char line[32];
		size_t len = 0;
		do {
			if (len == sizeof(line) - 1)
				die("length line too long", 0);
			read_some(s, line + len, 1);
		} while (line[len++] != '\n');
		line[len] = 0;
		size_t left = strtoul(line, NULL, 10);
		while (left) {
			size_t got = read_some(s, buf, left);
			write_all(s, buf, got);
			left -= got;
		}
		gnutls_bye(s, GNUTLS_SHUT_WR);
		gnutls_deinit(s);
		close(fd);
	}
	gnutls_certificate_free_credentials(cred);
	return 0;
}

static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int client(int port, size_t size, size_t rounds)
{
	gnutls_certificate_credentials_t cred;
	int r;
	if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0)
		die("credentials", r);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = loopback(port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die("connect", 0);
	gnutls_session_t s = session(fd, GNUTLS_CLIENT, cred);
	static const char unit[] = "req0123456789";
	char *msg = malloc(size + 32), *got = malloc(size + 1);
	int head = snprintf(msg, 32, "%zu\n", size);
	for (size_t i = 0; i < size; i++)
		msg[head + i] = unit[i % (sizeof(unit) - 1)];
	long long start = now_us();
	write_all(s, msg, head);
	size_t each = size / rounds, have = 0;
	for (size_t i = 0; i < rounds; i++) {
		size_t n = i + 1 == rounds ? size - have : each;
		write_all(s, msg + head + have, n);
		for (size_t end = have + n; have < end;)
			have += read_some(s, got + have, end - have);
	}
	long long took = now_us() - start;
	if (memcmp(got, msg + head, size) != 0)
		die("the echo differs", 0);
	struct sockaddr_in local;
	socklen_t sl = sizeof(local);
	getsockname(fd, (struct sockaddr *)&local, &sl);
	printf("%d\n%lld\n", ntohs(local.sin_port), took);
	fflush(stdout);
	/* Closed only after the server has (its close_notify, or the end). */
	while (gnutls_record_recv(s, got, 1) > 0)
		;
	gnutls_deinit(s);
	close(fd);
	gnutls_certificate_free_credentials(cred);
	free(msg);
	free(got);
	return 0;
}

int main(int argc, char **argv)
{
	if (gnutls_global_init() < 0)
		die("gnutls_global_init", 0);
	if (argc == 6 && strcmp(argv[1], "server") == 0)
		return serve(atoi(argv[2]), argv[3], argv[4], atoi(argv[5]));
	if (argc == 5 && strcmp(argv[1], "client") == 0 && strtoul(argv[4], NULL, 10) > 0)
		return client(atoi(argv[2]), strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10));
	fprintf(stderr, "usage: %s server PORT CERT KEY COUNT | client PORT SIZE ROUNDS\n", argv[0]);
	return 2;
}

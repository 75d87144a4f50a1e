/*
 * A TLS echo client or server on the OpenSSL API, built by the tests against
 * OpenSSL 1.1.1 and LibreSSL (ci/install-oldssl.sh), shared and static. Only
 * calls both have: SSLv23_*_method (TLS_*_method is newer than LibreSSL
 * 2.0), SSL_read and SSL_write (no _ex), SSL_set_fd (a socket BIO).
 *
 *   ossl_echo_peer server PORT CERT KEY COUNT
 *   ossl_echo_peer client PORT SIZE [ROUNDS]
 *
 * The server prints "listening" and serves COUNT connections one after
 * another: each starts with a line "N\n", whose N following bytes are
 * echoed back as they are read. The client sends "SIZE\n" and SIZE pattern
 * bytes ("req" + "0123456789" repeated), reads the echo, checks it, prints
 * its local port, and closes once the server has (the same protocol as
 * openssl_ctypes_peer.py). With ROUNDS, the SIZE bytes go as ROUNDS messages,
 * each sent once the echo of the one before is read (one SSL_write and its
 * SSL_reads per message at each end: the per-call cost of the probes), and
 * a second line says how long that took in microseconds.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 16)

static void die(const char *what)
{
	fprintf(stderr, "ossl_echo_peer: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static void write_all(SSL *ssl, const char *p, size_t n)
{
	while (n) {
		int chunk = n < CHUNK ? (int)n : CHUNK;
		int w = SSL_write(ssl, p, chunk);
		if (w <= 0)
			die("SSL_write");
		p += w;
		n -= w;
	}
}

static int read_some(SSL *ssl, char *buf, size_t want)
{
	int r = SSL_read(ssl, buf, want < CHUNK ? (int)want : CHUNK);
	if (r <= 0)
		die("SSL_read");
	return r;
}

static int serve(int port, const char *cert, const char *key, int count)
{
	SSL_CTX *ctx = SSL_CTX_new(SSLv23_server_method());
	if (!ctx || SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		die("server certificate and key");
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 8) != 0)
		die("bind/listen");
	printf("listening\n");
	fflush(stdout);
	static char buf[CHUNK];
	for (int i = 0; i < count; i++) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			die("accept");
		/* Each message goes out at once (no wait for the last one's ACK):
		 * timed rounds measure the calls, not delayed ACKs. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		SSL *ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1)
			die("SSL_accept");
		char line[32];
		size_t len = 0;
		do {
			if (len == sizeof(line) - 1)
				die("length line too long");
			read_some(ssl, line + len, 1);
		} while (line[len++] != '\n');
		line[len] = 0;
		size_t left = strtoul(line, NULL, 10);
		while (left) {
			int r = read_some(ssl, buf, left);
			write_all(ssl, buf, r);
			left -= r;
		}
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	}
	SSL_CTX_free(ctx);
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
	SSL_CTX *ctx = SSL_CTX_new(SSLv23_client_method());
	if (!ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die("connect");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		die("SSL_connect");
	static const char unit[] = "req0123456789";
	char *msg = malloc(size + 32), *got = malloc(size + 1);
	int head = snprintf(msg, 32, "%zu\n", size);
	for (size_t i = 0; i < size; i++)
		msg[head + i] = unit[i % (sizeof(unit) - 1)];
	long long start = now_us();
	if (rounds == 0) {
		write_all(ssl, msg, head + size);
		for (size_t have = 0; have < size;)
			have += read_some(ssl, got + have, size - have);
	} else {
		write_all(ssl, msg, head);
		size_t each = size / rounds, have = 0;
		for (size_t r = 0; r < rounds; r++) {
			size_t n = r + 1 == rounds ? size - have : each;
			write_all(ssl, msg + head + have, n);
			for (size_t end = have + n; have < end;)
				have += read_some(ssl, got + have, end - have);
		}
	}
	long long took = now_us() - start;
	if (memcmp(got, msg + head, size) != 0)
		die("the echo differs");
	struct sockaddr_in local;
	socklen_t sl = sizeof(local);
	getsockname(fd, (struct sockaddr *)&local, &sl);
	printf("%d\n", ntohs(local.sin_port));
	if (rounds)
		printf("%lld\n", took);
	fflush(stdout);
	/* Closed only after the server has: closing with TLS 1.3 session
	 * tickets unread would reset the connection under the server's reads. */
	while (SSL_read(ssl, got, 1) > 0)
		;
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	free(msg);
	free(got);
	return 0;
}

int main(int argc, char **argv)
{
	SSL_library_init();
	SSL_load_error_strings();
	if (argc == 6 && strcmp(argv[1], "server") == 0)
		return serve(atoi(argv[2]), argv[3], argv[4], atoi(argv[5]));
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "client") == 0)
		return client(atoi(argv[2]), strtoul(argv[3], NULL, 10), argc == 5 ? strtoul(argv[4], NULL, 10) : 0);
	fprintf(stderr, "usage: %s server PORT CERT KEY COUNT | client PORT SIZE [ROUNDS]\n", argv[0]);
	return 2;
}

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
#include "echo_peer.h"
#include <openssl/err.h>
#include <openssl/ssl.h>

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
	int lfd = echo_listen(port);
	if (lfd < 0)
		die("bind/listen");
	static char buf[CHUNK];
	for (int i = 0; i < count; i++) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			die("accept");
		echo_nodelay(fd);
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

static int client(int port, size_t size, size_t rounds)
{
	SSL_CTX *ctx = SSL_CTX_new(SSLv23_client_method());
	if (!ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	int fd = echo_connect(port);
	if (fd < 0)
		die("connect");
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		die("SSL_connect");
	int head;
	char *msg = echo_request(size, &head), *got = malloc(size + 1);
	long long start = echo_now_us();
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
	long long took = echo_now_us() - start;
	if (memcmp(got, msg + head, size) != 0)
		die("the echo differs");
	echo_report(fd, rounds, took);
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

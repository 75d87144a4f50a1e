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
#include "../tests/programs/echo_peer.h"
#include <gnutls/gnutls.h>

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
	int r;
	gnutls_session_t s;
	echo_nodelay(fd);
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

static int serve(int port, const char *cert, const char *key, int count)
{
	gnutls_certificate_credentials_t cred;
	int r;
	if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0 ||
	    (r = gnutls_certificate_set_x509_key_file(cred, cert, key, GNUTLS_X509_FMT_PEM)) < 0)
		die("server certificate and key", r);
	int lfd = echo_listen(port);
	if (lfd < 0)
		die("bind/listen", 0);
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

static int client(int port, size_t size, size_t rounds)
{
	gnutls_certificate_credentials_t cred;
	int r;
	if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0)
		die("credentials", r);
	int fd = echo_connect(port);
	if (fd < 0)
		die("connect", 0);
	gnutls_session_t s = session(fd, GNUTLS_CLIENT, cred);
	int head;
	char *msg = echo_request(size, &head), *got = malloc(size + 1);
	long long start = echo_now_us();
	write_all(s, msg, head);
	size_t each = size / rounds, have = 0;
	for (size_t i = 0; i < rounds; i++) {
		size_t n = i + 1 == rounds ? size - have : each;
		write_all(s, msg + head + have, n);
		for (size_t end = have + n; have < end;)
			have += read_some(s, got + have, end - have);
	}
	long long took = echo_now_us() - start;
	if (memcmp(got, msg + head, size) != 0)
		die("the echo differs", 0);
	echo_report(fd, rounds, took);
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

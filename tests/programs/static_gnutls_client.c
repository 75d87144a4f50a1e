/*
 * A TLS client with GnuTLS linked in statically (built by the test against
 * Debian's libgnutls.a; GnuTLS's own dependencies stay shared): GETs PATH
 * over one connection to 127.0.0.1:PORT and prints the response. With a
 * GO_FILE it waits for that file first.
 *
 *   static_gnutls_client PORT PATH [GO_FILE]
 */
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s PORT PATH [GO_FILE]\n", argv[0]);
		return 2;
	}
	for (int i = 0; argc > 3 && access(argv[3], F_OK) != 0; i++) {
		if (i > 3000)
			return 3; /* 30 s without a go-ahead */
		usleep(10000);
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		perror("connect");
		return 1;
	}
	gnutls_certificate_credentials_t cred;
	gnutls_session_t s;
	int rc;
	if ((rc = gnutls_certificate_allocate_credentials(&cred)) < 0 ||
	    (rc = gnutls_init(&s, GNUTLS_CLIENT)) < 0 || (rc = gnutls_set_default_priority(s)) < 0 ||
	    (rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred)) < 0) {
		fprintf(stderr, "gnutls: %s\n", gnutls_strerror(rc));
		return 1;
	}
	/* No verification: the test's server has a throwaway certificate. */
	gnutls_transport_set_int(s, fd);
	do {
		rc = gnutls_handshake(s);
	} while (rc < 0 && !gnutls_error_is_fatal(rc));
	if (rc < 0) {
		fprintf(stderr, "handshake: %s\n", gnutls_strerror(rc));
		return 1;
	}
	char req[512];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: static\r\nConnection: close\r\n\r\n", argv[2]);
	if (gnutls_record_send(s, req, n) != n) {
		fprintf(stderr, "short send\n");
		return 1;
	}
	char buf[4096];
	ssize_t got;
	while ((got = gnutls_record_recv(s, buf, sizeof(buf))) > 0 || got == GNUTLS_E_AGAIN ||
	       got == GNUTLS_E_INTERRUPTED)
		if (got > 0)
			fwrite(buf, 1, got, stdout);
	gnutls_bye(s, GNUTLS_SHUT_WR);
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	close(fd);
	return 0;
}

/*
 * A short-lived HTTP client for the process churn test: one GET of PATH to
 * 127.0.0.1:PORT over one connection, plain or TLS (libssl linked
 * dynamically, found through its rpath: the test puts a fresh copy of
 * libssl beside each copy of this program). Exits 0 only on a 200 answer.
 * With GO_FILE it waits (at most 30 s) for that file before connecting.
 *
 *   churn_client plain|tls PORT PATH [GO_FILE]
 */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s plain|tls PORT PATH [GO_FILE]\n", argv[0]);
		return 2;
	}
	int tls = strcmp(argv[1], "tls") == 0;
	for (int i = 0; argc > 4 && access(argv[4], F_OK) != 0; i++) {
		if (i > 3000)
			return 3;
		usleep(10000);
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		perror("connect");
		return 1;
	}
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	if (tls) {
		ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_connect(ssl) != 1)
			return 1;
	}
	char req[512];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: churn\r\nConnection: close\r\n\r\n", argv[3]);
	if ((tls ? SSL_write(ssl, req, n) : write(fd, req, n)) != n)
		return 1;
	char head[16] = { 0 };
	size_t have = 0;
	char buf[4096];
	int got;
	while ((got = tls ? SSL_read(ssl, buf, sizeof(buf)) : read(fd, buf, sizeof(buf))) > 0) {
		for (int i = 0; i < got && have < sizeof(head) - 1; i++)
			head[have++] = buf[i];
	}
	if (tls) {
		SSL_shutdown(ssl);
		SSL_free(ssl);
		SSL_CTX_free(ctx);
	}
	close(fd);
	return strncmp(head, "HTTP/1.1 200 ", 13) == 0 ? 0 : 1;
}

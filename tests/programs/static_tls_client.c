/*
 * A TLS client with OpenSSL linked in statically (built by the test against
 * Debian's libssl.a): GETs PATH over one connection to 127.0.0.1:PORT and
 * prints the response. With a GO_FILE it waits for that file first.
 *
 *   static_tls_client PORT PATH [GO_FILE]
 */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	char req[512];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: static\r\nConnection: close\r\n\r\n", argv[2]);
	if (SSL_write(ssl, req, n) != n) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	char buf[4096];
	int got;
	while ((got = SSL_read(ssl, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, got, stdout);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}

/*
 * A TLS echo client on NSS, for bench/tls_call_cost.sh: the client half of
 * the echo protocol of tests/programs/ossl_echo_peer.c, against
 * tests/programs/nss_echo_server.c, so NSS's calls are timed as the other
 * libraries' are (PR_Write and PR_Read at both ends, one message in flight).
 *
 *   nss_echo_client PORT SIZE ROUNDS
 *
 * Sends "SIZE\n", then the SIZE pattern bytes as ROUNDS messages, each once
 * the echo of the one before is read, checks the echo and prints its local
 * port and the microseconds the rounds took. It does not check the server's
 * certificate (no NSS database: NSS_NoDB_Init).
 */
#include "../tests/programs/echo_peer.h"
#include <nss.h>
#include <prerror.h>
#include <prio.h>
#include <prnetdb.h>
#include <ssl.h>

#define CHUNK (1 << 14)

static void fail(const char *what)
{
	fprintf(stderr, "nss_echo_client: %s failed: error %d\n", what, PR_GetError());
	exit(1);
}

static SECStatus accept_any_certificate(void *arg, PRFileDesc *fd, PRBool check_sig, PRBool is_server)
{
	(void)arg, (void)fd, (void)check_sig, (void)is_server;
	return SECSuccess;
}

static void write_all(PRFileDesc *s, const char *p, size_t n)
{
	while (n) {
		PRInt32 w = PR_Write(s, p, n < CHUNK ? (PRInt32)n : CHUNK);
		if (w <= 0)
			fail("PR_Write");
		p += w;
		n -= (size_t)w;
	}
}

int main(int argc, char **argv)
{
	if (argc != 4 || strtoul(argv[3], NULL, 10) == 0) {
		fprintf(stderr, "usage: %s PORT SIZE ROUNDS\n", argv[0]);
		return 2;
	}
	int port = atoi(argv[1]);
	size_t size = strtoul(argv[2], NULL, 10), rounds = strtoul(argv[3], NULL, 10);
	if (NSS_NoDB_Init(NULL) != SECSuccess || NSS_SetDomesticPolicy() != SECSuccess)
		fail("NSS_NoDB_Init");

	PRFileDesc *tcp = PR_NewTCPSocket();
	PRSocketOptionData nodelay = { .option = PR_SockOpt_NoDelay, .value.no_delay = PR_TRUE };
	PRNetAddr addr;
	if (!tcp || PR_SetSocketOption(tcp, &nodelay) != PR_SUCCESS)
		fail("PR_NewTCPSocket");
	if (PR_InitializeNetAddr(PR_IpAddrLoopback, (PRUint16)port, &addr) != PR_SUCCESS ||
	    PR_Connect(tcp, &addr, PR_INTERVAL_NO_TIMEOUT) != PR_SUCCESS)
		fail("PR_Connect");
	PRFileDesc *s = SSL_ImportFD(NULL, tcp);
	if (!s || SSL_OptionSet(s, SSL_HANDSHAKE_AS_CLIENT, PR_TRUE) != SECSuccess ||
	    SSL_AuthCertificateHook(s, accept_any_certificate, NULL) != SECSuccess ||
	    SSL_SetURL(s, "localhost") != SECSuccess || SSL_ResetHandshake(s, PR_FALSE) != SECSuccess ||
	    SSL_ForceHandshake(s) != SECSuccess)
		fail("the handshake");

	int head;
	char *msg = echo_request(size, &head), *got = malloc(size + 1);
	long long start = echo_now_us();
	write_all(s, msg, (size_t)head);
	size_t each = size / rounds, have = 0;
	for (size_t i = 0; i < rounds; i++) {
		size_t n = i + 1 == rounds ? size - have : each;
		write_all(s, msg + head + have, n);
		for (size_t end = have + n; have < end;) {
			PRInt32 r = PR_Read(s, got + have, (PRInt32)(end - have));
			if (r <= 0)
				fail("PR_Read");
			have += (size_t)r;
		}
	}
	long long took = echo_now_us() - start;
	if (memcmp(got, msg + head, size) != 0) {
		fprintf(stderr, "nss_echo_client: the echo differs\n");
		return 1;
	}
	PRNetAddr local;
	if (PR_GetSockName(s, &local) != PR_SUCCESS)
		fail("PR_GetSockName");
	printf("%d\n%lld\n", PR_ntohs(local.inet.port), took);
	fflush(stdout);
	/* Closed only after the server has. */
	while (PR_Read(s, got, 1) > 0)
		;
	PR_Close(s);
	free(msg);
	free(got);
	return NSS_Shutdown() == SECSuccess ? 0 : 1;
}

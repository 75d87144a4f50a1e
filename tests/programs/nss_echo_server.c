// An NSS TLS server for the tests, for what selfserv cannot do (receive
// more than its 10 KiB request buffer). Serves COUNT connections on
// 127.0.0.1:PORT one after another with the certificate NICKNAME of the NSS
// database DB: each starts with a line "N\n"; the N bytes after it are
// echoed back as they are read (after a peek at the first bytes), then the
// connection is closed. Prints
// "listening" once it accepts connections.
//   nss_echo_server DB NICKNAME PORT COUNT
#include <cert.h>
#include <nss.h>
#include <pk11pub.h>
#include <prerror.h>
#include <prnetdb.h>
#include <prio.h>
#include <ssl.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(const char *what) {
    fprintf(stderr, "nss_echo_server: %s failed: error %d\n", what, PR_GetError());
    exit(1);
}

static void write_all(PRFileDesc *s, const char *buf, int n) {
    while (n > 0) {
        int w = PR_Write(s, buf, n);
        if (w <= 0) fail("PR_Write");
        buf += w;
        n -= w;
    }
}

static void serve(PRFileDesc *s) {
    // A peek first, as some servers do to sniff a protocol: the bytes are
    // read again below, and must be captured once.
    char peek[4];
    if (PR_Recv(s, peek, sizeof peek, PR_MSG_PEEK, PR_INTERVAL_NO_TIMEOUT) <= 0) fail("PR_Recv(PR_MSG_PEEK)");
    char line[32];
    int len = 0;
    for (;;) {
        if (len == (int)sizeof line - 1 || PR_Read(s, line + len, 1) != 1) fail("reading the length line");
        if (line[len] == '\n') break;
        len++;
    }
    line[len] = 0;
    long left = atol(line);
    static char buf[65536];
    while (left > 0) {
        int r = PR_Read(s, buf, left < (long)sizeof buf ? (int)left : (int)sizeof buf);
        if (r <= 0) fail("PR_Read");
        write_all(s, buf, r);
        left -= r;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: nss_echo_server DB NICKNAME PORT COUNT\n");
        return 2;
    }
    if (NSS_Init(argv[1]) != SECSuccess) fail("NSS_Init");
    if (NSS_SetDomesticPolicy() != SECSuccess) fail("NSS_SetDomesticPolicy");
    if (SSL_ConfigServerSessionIDCache(0, 0, 0, NULL) != SECSuccess) fail("SSL_ConfigServerSessionIDCache");
    CERTCertificate *cert = PK11_FindCertFromNickname(argv[2], NULL);
    if (!cert) fail("PK11_FindCertFromNickname");
    SECKEYPrivateKey *key = PK11_FindKeyByAnyCert(cert, NULL);
    if (!key) fail("PK11_FindKeyByAnyCert");

    PRFileDesc *listener = PR_NewTCPSocket();
    PRSocketOptionData reuse = {.option = PR_SockOpt_Reuseaddr, .value.reuse_addr = PR_TRUE};
    PRNetAddr addr;
    if (!listener || PR_SetSocketOption(listener, &reuse) != PR_SUCCESS) fail("PR_NewTCPSocket");
    if (PR_InitializeNetAddr(PR_IpAddrLoopback, (PRUint16)atoi(argv[3]), &addr) != PR_SUCCESS) fail("address");
    if (PR_Bind(listener, &addr) != PR_SUCCESS || PR_Listen(listener, 8) != PR_SUCCESS) fail("PR_Bind/PR_Listen");

    PRFileDesc *model = SSL_ImportFD(NULL, PR_NewTCPSocket());
    if (!model) fail("SSL_ImportFD");
    if (SSL_ConfigServerCert(model, cert, key, NULL, 0) != SECSuccess) fail("SSL_ConfigServerCert");
    printf("listening\n");
    fflush(stdout);

    for (long c = atol(argv[4]); c > 0; c--) {
        PRFileDesc *tcp = PR_Accept(listener, NULL, PR_INTERVAL_NO_TIMEOUT);
        if (!tcp) fail("PR_Accept");
        // Each echo goes out at once, not after the last one's ACK (timed
        // lockstep rounds in bench/tls_call_cost.sh).
        PRSocketOptionData nodelay = {.option = PR_SockOpt_NoDelay, .value.no_delay = PR_TRUE};
        if (PR_SetSocketOption(tcp, &nodelay) != PR_SUCCESS) fail("PR_SetSocketOption(NoDelay)");
        PRFileDesc *s = SSL_ImportFD(model, tcp);
        if (!s || SSL_ResetHandshake(s, PR_TRUE) != SECSuccess) fail("SSL_ImportFD (connection)");
        serve(s);
        PR_Close(s);
    }
    PR_Close(model);
    PR_Close(listener);
    NSS_Shutdown();
    return 0;
}

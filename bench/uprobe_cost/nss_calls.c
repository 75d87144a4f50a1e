// Calls NSS's SSL-layer read and write methods (ssl_Read, ssl_Write: static
// functions, taken from the method table of a socket that SSL_ImportFD made)
// N times each on a descriptor that is not an SSL socket, which they refuse
// at once, as they refuse every non-SSL descriptor; prints ns per call of
// each. N = 0: keeps the library mapped until killed.
//   nss_calls LIBSSL3 N
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef int (*io_fn)(void *, void *, int);

// NSPR's PRFileDesc (prio.h): the method table comes first.
struct fd_stub {
    const void *methods;
    void *secret, *lower, *higher, *dtor;
    int identity;
};

static double ns_per_call(io_fn f, void *fd, long n) {
    char buf[16];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) f(fd, buf, sizeof buf);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: nss_calls LIBSSL3 N\n");
        return 2;
    }
    void *nspr = dlopen("libnspr4.so", RTLD_NOW | RTLD_GLOBAL);
    void *ssl = dlopen(argv[1], RTLD_NOW);
    if (!nspr || !ssl) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    void *(*new_tcp)(void) = (void *(*)(void))dlsym(nspr, "PR_NewTCPSocket");
    void *(*import)(void *, void *) = (void *(*)(void *, void *))dlsym(ssl, "SSL_ImportFD");
    void *sock = new_tcp && import ? import(NULL, new_tcp()) : NULL;
    if (!sock) {
        fprintf(stderr, "SSL_ImportFD failed\n");
        return 1;
    }
    // PRIOMethods: file_type, close, read (slot 2), write (slot 3).
    void *const *methods = *(void *const *const *)sock;
    io_fn r = (io_fn)methods[2], w = (io_fn)methods[3];
    static const long plain_methods[36] = {1}; // PR_DESC_FILE
    struct fd_stub plain = {plain_methods, 0, 0, 0, 0, 0};
    long n = atol(argv[2]);
    if (n == 0) {
        pause();
        return 0;
    }
    printf("%.0f %.0f\n", ns_per_call(r, &plain, n), ns_per_call(w, &plain, n));
    return 0;
}

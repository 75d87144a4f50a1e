// Calls SSL_read and SSL_write N times each; prints ns per call of each.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int SSL_read(void *s, void *b, int n);
int SSL_write(void *s, const void *b, int n);

static double ns_per_call(int (*f)(void *, void *, int), long n) {
    char buf[16];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) f((void *)1, buf, sizeof buf);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    double r = ns_per_call(SSL_read, n);
    double w = ns_per_call((int (*)(void *, void *, int))SSL_write, n);
    printf("%.0f %.0f\n", r, w);
    return 0;
}

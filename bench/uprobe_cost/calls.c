// Calls a library's read and write functions N times each (taken with
// dlopen, as .NET loads libssl); prints ns per call of each. N = 0: keeps
// the library mapped until killed (so the sensor finds it in the maps).
//   calls LIBRARY READ_SYMBOL WRITE_SYMBOL N
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef long (*io_fn)(void *, void *, unsigned long);

static double ns_per_call(io_fn f, long n) {
    char buf[16];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) f((void *)1, buf, sizeof buf);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: calls LIBRARY READ_SYMBOL WRITE_SYMBOL N\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    io_fn r = (io_fn)dlsym(lib, argv[2]), w = (io_fn)dlsym(lib, argv[3]);
    if (!r || !w) {
        fprintf(stderr, "%s or %s missing\n", argv[2], argv[3]);
        return 1;
    }
    long n = atol(argv[4]);
    if (n == 0) {
        pause();
        return 0;
    }
    // The callees ignore the width of their int/ssize_t result here: -1 either way.
    printf("%.0f %.0f\n", ns_per_call(r, n), ns_per_call(w, n));
    return 0;
}

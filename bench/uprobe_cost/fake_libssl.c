// A stand-in libssl for measuring what a probed call costs: SSL_read begins
// with an instruction the kernel must single-step out of line (`sub $8,%rsp`,
// as Debian's libssl.so.3 does), SSL_write with one it emulates (`push %rbp`,
// as Node.js's bundled OpenSSL does). Both return -1 at once.
__attribute__((naked)) int SSL_read(void *s, void *b, int n) {
    __asm__ volatile("sub $8, %rsp\n add $8, %rsp\n mov $-1, %eax\n ret\n");
}
__attribute__((naked)) int SSL_write(void *s, const void *b, int n) {
    __asm__ volatile("push %rbp\n mov %rsp, %rbp\n mov $-1, %eax\n pop %rbp\n ret\n");
}
int SSL_read_ex(void *s, void *b, unsigned long n, unsigned long *r) { return 0; }
int SSL_write_ex(void *s, const void *b, unsigned long n, unsigned long *w) { return 0; }

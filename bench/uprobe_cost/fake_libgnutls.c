// A stand-in libgnutls for measuring what a probed call costs, shaped like
// Debian's libgnutls.so.30: gnutls_record_recv begins with `sub $8,%rsp`
// (single-stepped), gnutls_record_send2 with `push %r15` (emulated). Both
// return -1 at once (nothing moved: no record is written).
__attribute__((naked)) long gnutls_record_recv(void *s, void *b, unsigned long n) {
    __asm__ volatile("sub $8, %rsp\n add $8, %rsp\n mov $-1, %rax\n ret\n");
}
__attribute__((naked)) long gnutls_record_send2(void *s, const void *b, unsigned long n, unsigned long pad,
                                                unsigned flags) {
    __asm__ volatile("push %r15\n mov $-1, %rax\n pop %r15\n ret\n");
}
long gnutls_record_recv_seq(void *s, void *b, unsigned long n, unsigned char *seq) { return -1; }

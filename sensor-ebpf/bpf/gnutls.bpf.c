/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TLS plaintext from GnuTLS (libgnutls.so.30): uprobes on
 * gnutls_record_send2 (the buffer before encryption; gnutls_record_send is a
 * tail jump into it) and gnutls_record_recv / gnutls_record_recv_seq (the
 * buffer after decryption, at return). Same shape as SSL_write/SSL_read:
 * (session, buffer, length) in, bytes moved (or a negative GNUTLS_E_*) out.
 *
 * The session is tracked exactly as an SSL object is (openssl.bpf.c): the
 * call in flight per thread in ssl_calls, the socket learnt from the
 * syscalls the library makes inside the call, so no GnuTLS struct is read.
 */

SEC("uprobe")
int BPF_KPROBE(up_gnutls_send, void *session, const void *data, size_t size)
{
	return ssl_enter(session, (void *)data, NULL, NT_PROBE_UPROBE_GNUTLS_SEND, NT_DIR_SEND);
}

SEC("uprobe")
int BPF_KPROBE(up_gnutls_recv, void *session, void *data, size_t size)
{
	return ssl_enter(session, data, NULL, NT_PROBE_UPROBE_GNUTLS_RECV, NT_DIR_RECV);
}

SEC("uprobe")
int BPF_KPROBE(up_gnutls_recv_seq, void *session, void *data, size_t size)
{
	return ssl_enter(session, data, NULL, NT_PROBE_UPROBE_GNUTLS_RECV_SEQ, NT_DIR_RECV);
}

/* One exit for all three: the call in flight says which it was. ssize_t. */
SEC("uretprobe")
int BPF_KRETPROBE(ur_gnutls_ret, long ret)
{
	return ssl_exit(ret, false, 0);
}

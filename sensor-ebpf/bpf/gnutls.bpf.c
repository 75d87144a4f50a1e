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

NT_UPROBE(up_gnutls_send)
{
	void *session = (void *)PT_REGS_PARM1(ctx), *data = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(session, data, NULL, NT_PROBE_UPROBE_GNUTLS_SEND, NT_DIR_SEND);
}

NT_UPROBE(up_gnutls_recv)
{
	void *session = (void *)PT_REGS_PARM1(ctx), *data = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(session, data, NULL, NT_PROBE_UPROBE_GNUTLS_RECV, NT_DIR_RECV);
}

NT_UPROBE(up_gnutls_recv_seq)
{
	void *session = (void *)PT_REGS_PARM1(ctx), *data = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(session, data, NULL, NT_PROBE_UPROBE_GNUTLS_RECV_SEQ, NT_DIR_RECV);
}

/* One exit for all three: the call in flight says which it was. ssize_t. */
NT_URETPROBE(ur_gnutls_ret)
{
	return ssl_exit((long)PT_REGS_RC(ctx), false, 0);
}

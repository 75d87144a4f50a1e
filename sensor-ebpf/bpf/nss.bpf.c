/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TLS plaintext from NSS (libssl3.so): uprobes on the SSL layer's I/O
 * methods, static functions found by the sensor in the method table's setup
 * code (probes/nss_methods.rs): ssl_Write(fd, buf, len) and
 * ssl_Send(fd, buf, len, flags, timeout) before encryption, ssl_Read and
 * ssl_Recv after decryption (at return). Only SSL sockets reach them. The
 * SSL layer's PRFileDesc is the call's key, and its socket is learnt from
 * the syscalls NSPR makes inside the call, as for OpenSSL (openssl.bpf.c):
 * no NSS or NSPR struct is read.
 */

NT_UPROBE(up_nss_write)
{
	void *fd = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(fd, buf, NULL, NT_PROBE_UPROBE_NSS_WRITE, NT_DIR_SEND);
}

NT_UPROBE(up_nss_send)
{
	void *fd = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(fd, buf, NULL, NT_PROBE_UPROBE_NSS_SEND, NT_DIR_SEND);
}

NT_UPROBE(up_nss_read)
{
	void *fd = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(fd, buf, NULL, NT_PROBE_UPROBE_NSS_READ, NT_DIR_RECV);
}

/* PR_MSG_PEEK (prio.h): the bytes stay, to be read again. */
#define NT_PR_MSG_PEEK 0x2

NT_UPROBE(up_nss_recv)
{
	void *fd = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	/* A peek is not a read: its bytes come again from the next call. */
	if ((int)PT_REGS_PARM4(ctx) & NT_PR_MSG_PEEK)
		return 0;
	return ssl_enter(fd, buf, NULL, NT_PROBE_UPROBE_NSS_RECV, NT_DIR_RECV);
}

/* One exit for all four: the call in flight says which it was. PRInt32. */
NT_URETPROBE(ur_nss_ret)
{
	return ssl_exit((int)PT_REGS_RC(ctx), false, 0);
}

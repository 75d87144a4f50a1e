/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TLS plaintext from OpenSSL (libssl.so.3, or a binary with OpenSSL linked
 * in): uprobes on SSL_write/SSL_write_ex (the buffer before encryption) and
 * SSL_read/SSL_read_ex (the buffer after decryption, at return).
 *
 * The socket comes from the syscalls the library makes inside these calls
 * (see socket_bytes_are_tls in emit.bpf.h), not from OpenSSL's structs, so
 * no per-version layout is needed. Where the library makes none (memory
 * BIOs: Node.js), from the socket syscalls of the same thread just before.
 */

#include "emit.bpf.h"

static __always_inline int ssl_enter(void *ssl, void *buf, void *len_ptr, __u16 probe, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct ssl_call call = {
		.ssl = (__u64)ssl,
		.buf = (__u64)buf,
		.len_ptr = (__u64)len_ptr,
		.probe = probe,
		.direction = direction,
	};
	if (!begin_ssl_call(&call))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

/*
 * An SSL call that made no syscall of its own on an SSL object with no
 * socket yet: a memory BIO, fed by the event loop that read the ciphertext
 * on this thread just before (Node.js: uv read → OnStreamRead → Cycle →
 * SSL_write of queued cleartext, then SSL_read, the handshake finishing in
 * whichever comes first). That socket is this object's unless another SSL
 * object already owns it.
 */
static __always_inline struct ssl_binding *adopt_thread_socket(const struct ssl_key *key, __u64 id)
{
	__u64 *last = bpf_map_lookup_elem(&thread_tls_recv, &id);
	if (!last)
		return NULL;
	__u64 sk = *last;
	struct ssl_key *owner = bpf_map_lookup_elem(&socket_ssl, &sk);
	if (owner && (owner->ssl != key->ssl || owner->tgid != key->tgid))
		return NULL;
	bind_ssl_socket(key, sk, 0);
	return bpf_map_lookup_elem(&ssl_sockets, key);
}

/* `ret` is the function's return value; `ex` calls (and the internal
 * functions under them) return 1 (> 0) and write the count. `probe`, when
 * not 0, names the probe that took the result. */
static __always_inline int ssl_exit(long ret, bool ex, __u16 probe)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call call;
	if (!take_ssl_call(&call))
		return 0;
	if (probe)
		call.probe = probe;

	long n = ret;
	if (ex) {
		size_t moved = 0;
		if (ret <= 0 || bpf_probe_read_user(&moved, sizeof(moved), (void *)call.len_ptr))
			n = 0;
		else
			n = moved;
	}
	struct ssl_key key = { .ssl = call.ssl, .tgid = id >> 32 };
	struct ssl_binding *b = bpf_map_lookup_elem(&ssl_sockets, &key);
	/* A read that moved nothing may still have finished the handshake on
	 * the bytes just read; a write that moved nothing proves nothing. */
	if (!b && (n > 0 || call.direction == NT_DIR_RECV))
		b = adopt_thread_socket(&key, id);
	if (n <= 0)
		return 0;
	/* No socket: no syscall of this SSL object seen yet (attached while the
	 * connection was idle, or a memory BIO written first). */
	__u64 sk = b ? b->sk : 0;
	if (sk && !ports_wanted((struct sock *)sk))
		return 0;
	return emit_tls_plaintext(sk, call.buf, n, call.probe, call.direction, id);
}

NT_UPROBE(up_ssl_write)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(ssl, buf, NULL, NT_PROBE_UPROBE_SSL_WRITE, NT_DIR_SEND);
}

NT_URETPROBE(ur_ssl_write)
{
	return ssl_exit((int)PT_REGS_RC(ctx), false, 0);
}

NT_UPROBE(up_ssl_write_ex)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	size_t *written = (size_t *)PT_REGS_PARM4(ctx);
	return ssl_enter(ssl, buf, written, NT_PROBE_UPROBE_SSL_WRITE_EX, NT_DIR_SEND);
}

NT_URETPROBE(ur_ssl_write_ex)
{
	return ssl_exit((int)PT_REGS_RC(ctx), true, 0);
}

NT_UPROBE(up_ssl_read)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(ssl, buf, NULL, NT_PROBE_UPROBE_SSL_READ, NT_DIR_RECV);
}

NT_URETPROBE(ur_ssl_read)
{
	return ssl_exit((int)PT_REGS_RC(ctx), false, 0);
}

NT_UPROBE(up_ssl_read_ex)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	size_t *readbytes = (size_t *)PT_REGS_PARM4(ctx);
	return ssl_enter(ssl, buf, readbytes, NT_PROBE_UPROBE_SSL_READ_EX, NT_DIR_RECV);
}

NT_URETPROBE(ur_ssl_read_ex)
{
	return ssl_exit((int)PT_REGS_RC(ctx), true, 0);
}

/*
 * ssl_write_internal and ssl_read_internal, which SSL_write/SSL_write_ex
 * and SSL_read/SSL_read_ex call with the _ex arguments
 * (probes/shared_callee.rs): probed instead of them where found, with the
 * _ex uretprobes.
 */
NT_UPROBE(up_ssl_write_internal)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	size_t *written = (size_t *)PT_REGS_PARM4(ctx);
	return ssl_enter(ssl, buf, written, NT_PROBE_UPROBE_SSL_WRITE_INTERNAL, NT_DIR_SEND);
}

NT_UPROBE(up_ssl_read_internal)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	size_t *readbytes = (size_t *)PT_REGS_PARM4(ctx);
	return ssl_enter(ssl, buf, readbytes, NT_PROBE_UPROBE_SSL_READ_INTERNAL, NT_DIR_RECV);
}

/*
 * The same exits from uprobes on a function's return sites instead of a
 * uretprobe (probes/sites.rs): where the kernel emulates the instruction
 * there, a probed call costs no single-step. The result is still in %rax.
 */
NT_UPROBE(up_ssl_write_ret)
{
	return ssl_exit((int)PT_REGS_RC(ctx), false, 0);
}

NT_UPROBE(up_ssl_write_ex_ret)
{
	return ssl_exit((int)PT_REGS_RC(ctx), true, 0);
}

NT_UPROBE(up_ssl_read_ret)
{
	return ssl_exit((int)PT_REGS_RC(ctx), false, NT_PROBE_UPROBE_SSL_READ_SITE);
}

NT_UPROBE(up_ssl_read_ex_ret)
{
	return ssl_exit((int)PT_REGS_RC(ctx), true, NT_PROBE_UPROBE_SSL_READ_EX_SITE);
}

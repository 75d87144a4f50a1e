/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TLS plaintext from BoringSSL linked into a file without its symbols
 * (gRPC's C core in grpcio's cygrpc module; the functions are found by
 * probes/boringssl_find.rs): SSL_write (the buffer before encryption) and
 * SSL_read (the buffer after decryption, at return), tracked per thread in
 * ssl_calls like OpenSSL's.
 *
 * gRPC gives BoringSSL a memory BIO pair: the SSL calls make no syscall,
 * and the socket I/O runs where gRPC's event engine puts it, measured on
 * another thread for handshake reads. So the socket is learnt from the
 * ciphertext itself: the BIO pair's bio_write called inside an SSL call
 * (SSL_write, SSL_read, SSL_do_handshake) is the SSL object writing records
 * into its own end of the pair; their first bytes are kept (bssl_sent) and
 * the socket whose next send starts with exactly those bytes is the
 * object's (bssl_bind_sent in emit.bpf.h). Both ends write during the
 * handshake (the client its hello, the server its answer), so a connection
 * made while probed is bound before any plaintext. No BoringSSL or gRPC
 * struct is read.
 */

/* SSL_do_handshake in progress, per thread: the SSL object. A map of its
 * own: SSL_write and SSL_read call it while their own call is in ssl_calls. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* see maps.bpf.h */
	__type(key, __u64);   /* pid_tgid */
	__type(value, __u64); /* SSL * */
} bssl_handshakes SEC(".maps");

NT_UPROBE(up_bssl_write)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(ssl, buf, NULL, NT_PROBE_UPROBE_BSSL_WRITE, NT_DIR_SEND);
}

NT_UPROBE(up_bssl_read)
{
	void *ssl = (void *)PT_REGS_PARM1(ctx), *buf = (void *)PT_REGS_PARM2(ctx);
	return ssl_enter(ssl, buf, NULL, NT_PROBE_UPROBE_BSSL_READ, NT_DIR_RECV);
}

/*
 * An SSL_write of `n` bytes whose object has no socket yet: held (see
 * bssl_held in maps.bpf.h) until its ciphertext goes out on one, since that
 * send comes after this return. Counted as unbound when it cannot be held.
 */
static __always_inline int bssl_hold(const struct ssl_key *key, __u64 buf, long n, __u16 probe)
{
	struct bssl_held *h = bpf_map_lookup_elem(&bssl_held, key);
	if (!h) {
		__u32 zero = 0;
		struct bssl_held *fresh = bpf_map_lookup_elem(&bssl_held_init, &zero);
		if (!fresh)
			goto unbound;
		fresh->len = 0;
		fresh->probe = probe;
		fresh->spoiled = 0;
		if (bpf_map_update_elem(&bssl_held, key, fresh, BPF_NOEXIST))
			goto unbound;
		h = bpf_map_lookup_elem(&bssl_held, key);
		if (!h)
			goto unbound;
	}
	if (h->spoiled)
		goto unbound;
	__u64 off = h->len;
	if (n <= 0 || n > BSSL_HELD_MAX || off + n > BSSL_HELD_MAX)
		goto spoil;
	/* Unsigned and masked copies, checked again on the same registers, so
	 * the verifier keeps both bounds (n itself is a signed long). */
	__u64 len = (__u64)n & (2 * BSSL_HELD_MAX - 1);
	off &= BSSL_HELD_MAX - 1;
	barrier_var(len);
	if (len == 0 || len > BSSL_HELD_MAX)
		goto spoil;
	if (bpf_probe_read_user(&h->data[off], len, (void *)buf))
		goto spoil;
	h->len += len;
	return 0;
spoil:
	/* Held bytes go out whole or not at all: no gap inside what is written. */
	count_drop(NT_DROP_TLS_NO_SOCKET, h->len);
	h->len = 0;
	h->spoiled = 1;
unbound:
	count_drop(NT_DROP_TLS_NO_SOCKET, n);
	return 0;
}

/* SSL_write and SSL_read return an int: bytes moved, or <= 0. Unlike
 * OpenSSL's exit, no socket is adopted from the thread's last read: gRPC's
 * threads read for any connection. */
NT_URETPROBE(ur_bssl_ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call call;
	if (!take_ssl_call(&call))
		return 0;
	long n = (int)PT_REGS_RC(ctx);
	if (n <= 0)
		return 0;
	struct ssl_key key = { .ssl = call.ssl, .tgid = id >> 32 };
	struct ssl_binding *b = bpf_map_lookup_elem(&ssl_sockets, &key);
	if (!b && call.direction == NT_DIR_SEND)
		return bssl_hold(&key, call.buf, n, call.probe);
	__u64 sk = b ? b->sk : 0;
	if (sk && !ports_wanted((struct sock *)sk))
		return 0;
	return emit_tls_plaintext(sk, call.buf, n, call.probe, call.direction, id);
}

NT_UPROBE(up_bssl_handshake)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	__u64 ssl = PT_REGS_PARM1(ctx);
	if (bpf_map_update_elem(&bssl_handshakes, &id, &ssl, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

NT_URETPROBE(ur_bssl_handshake)
{
	__u64 id = bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&bssl_handshakes, &id);
	return 0;
}

/*
 * The BIO pair's bio_write(BIO *, const char *in, int inl). Inside an SSL
 * call of this thread it is the SSL object's own end (gRPC writes the
 * network end outside any SSL call): remember the records' first bytes.
 */
NT_UPROBE(up_bssl_bio_write)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u64 ssl = 0;
	struct ssl_call *call = current_ssl_call();
	if (call) {
		ssl = call->ssl;
	} else {
		__u64 *hs = bpf_map_lookup_elem(&bssl_handshakes, &id);
		if (!hs)
			return 0;
		ssl = *hs;
	}
	if ((int)PT_REGS_PARM3(ctx) < NT_BSSL_PREFIX)
		return 0;
	struct bssl_prefix key = { .tgid = id >> 32 };
	if (bpf_probe_read_user(key.bytes, sizeof(key.bytes), (void *)PT_REGS_PARM2(ctx)))
		return 0;
	struct ssl_key owner = { .ssl = ssl, .tgid = tgid };
	bpf_map_update_elem(&bssl_sent, &key, &owner, BPF_ANY);
	if (!bssl_process(tgid)) {
		__u8 one = 1;
		bpf_map_update_elem(&bssl_tgids, &tgid, &one, BPF_ANY);
	}
	return 0;
}

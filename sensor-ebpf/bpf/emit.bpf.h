/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Everything that writes to the ring buffer, and the drop accounting when it cannot. */
#ifndef NETTAP_EMIT_BPF_H
#define NETTAP_EMIT_BPF_H

#include "sock.bpf.h"

static __always_inline void count_drop(__u32 reason, __u64 bytes)
{
	struct nt_drop_counter *c = bpf_map_lookup_elem(&drops, &reason);
	if (c) {
		/* Per-CPU slot, and programs here do not nest on one CPU: plain adds suffice. */
		c->count += 1;
		c->bytes += bytes;
	}
}

/*
 * Ring wake-ups. Data and connection records do not wake the sensor: a
 * record into a ring the reader has emptied wakes it (the kernel's irq_work,
 * then an interrupt to the sleeping reader), and on our machines that made
 * the ring output of a Go client's request records cost 3.3 µs on average
 * at 1000 HTTPS requests/s against 0.34 µs without (docs/benchmarks.md).
 * The sensor polls the ring instead (capture.rs), and a ring a quarter full
 * wakes it early, at most once a millisecond. Exec, library and process
 * records still wake it at once: the exec gate and the probing wait on them.
 */
__u64 last_forced_wakeup = 0;

static __always_inline __u64 quiet_wakeup(__u64 now_ns)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (avail < bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 4 || now_ns - last_forced_wakeup < 1000000)
		return BPF_RB_NO_WAKEUP;
	last_forced_wakeup = now_ns;
	return BPF_RB_FORCE_WAKEUP;
}

/* A record's head; the endpoints are the ones its connection's entry keeps. */
static __always_inline void fill_header(struct nt_event_header *h, __u32 kind, __u32 probe,
					const struct conn_state *cs, __u32 pid, __u32 tid)
{
	h->kind = kind;
	h->probe = probe;
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->pid = pid;
	h->tid = tid;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&h->comm, task, group_leader, comm);
	h->cgroup = bpf_get_current_cgroup_id();
	ends_into(&cs->ends, &h->conn);
	h->conn.conn_id = cs->conn_id;
	h->conn.role = cs->role;
	h->conn.flags = cs->tls ? NT_CONN_F_TLS : 0;
}

static __always_inline void emit_conn(const struct conn_state *cs, __u32 event, __u32 probe, __u32 pid,
				      __u32 tid)
{
	struct nt_conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(NT_DROP_RINGBUF_FULL_EVENT, 0);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	fill_header(&ev->hdr, NT_EV_CONN, probe, cs, pid, tid);
	if (event == NT_CONN_CLOSE || event == NT_CONN_CLOSE_UNTRACKED) {
		/* Runs in whatever context closed the socket: not the owner's comm. */
		__builtin_memset(&ev->hdr.comm, 0, sizeof(ev->hdr.comm));
		ev->hdr.tid = 0;
		ev->hdr.cgroup = 0;
	}
	ev->event = event;
	ev->send_bytes = cs->send_seq;
	ev->recv_bytes = cs->recv_seq;
	bpf_ringbuf_submit(ev, quiet_wakeup(ev->hdr.ts_ns));
}

/* Start tracking `sk` as a new connection (connect/accept): always a fresh id. */
static __always_inline void conn_open(struct sock *sk, __u8 role, __u32 probe, __u32 pid, __u32 tid)
{
	__u64 key = (__u64)sk;
	struct conn_state st = {
		.conn_id = __sync_fetch_and_add(&next_conn_id, 1),
		.pid = pid,
		.role = role,
	};
	read_ends(sk, &st.ends);
	conn_store(&key, &st, BPF_ANY);
	emit_conn(&st, NT_CONN_OPEN, probe, pid, tid);
}

/*
 * Byte offsets the application has already written to / read from `sk`, from
 * TCP's own counters, so a connection opened before the sensor gets its true
 * stream offsets. Sent: data octets transmitted once (sent minus
 * retransmitted; SYN and FIN carry none) plus written-but-unsent. Read:
 * received minus still queued (a received FIN counts on both sides).
 */
static __always_inline void stream_offsets(struct sock *sk, __u64 *sent, __u64 *read)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 write_seq = BPF_CORE_READ(tp, write_seq);
	__u32 snd_nxt = BPF_CORE_READ(tp, snd_nxt);
	__u32 rcv_nxt = BPF_CORE_READ(tp, rcv_nxt);
	__u32 copied_seq = BPF_CORE_READ(tp, copied_seq);
	*sent = BPF_CORE_READ(tp, bytes_sent) - BPF_CORE_READ(tp, bytes_retrans) +
		(__u32)(write_seq - snd_nxt);
	*read = BPF_CORE_READ(tp, bytes_received) - (__u32)(rcv_nxt - copied_seq);
}

/*
 * The state of `sk`, creating it (and saying `midstream`) when it was opened
 * before us. `moved` bytes in `direction` were just moved by the call being
 * reported, and are already in TCP's counters.
 */
static __always_inline struct conn_state *conn_get(struct sock *sk, __u32 probe, __u32 pid, __u32 tid,
						   __u8 direction, __u64 moved)
{
	__u64 key = (__u64)sk;
	struct conn_state *cs = conn_lookup(&key);
	if (cs)
		return cs;
	struct conn_state st = {
		.conn_id = __sync_fetch_and_add(&next_conn_id, 1),
		.pid = pid,
		.role = NT_ROLE_UNKNOWN,
	};
	stream_offsets(sk, &st.send_seq, &st.recv_seq);
	read_ends(sk, &st.ends);
	if (direction == NT_DIR_SEND)
		st.send_seq -= moved;
	else
		st.recv_seq -= moved;
	if (conn_store(&key, &st, BPF_NOEXIST))
		return conn_lookup(&key); /* raced with another CPU */
	emit_conn(&st, NT_CONN_MIDSTREAM, probe, pid, tid);
	return conn_lookup(&key);
}

/* State of one call's payload walk, shared with the bpf_loop callback. */
struct emit_walk {
	__u64 iov;      /* iovec array; 0 for a single buffer */
	__u64 iovcnt;
	__u64 kernel_iov; /* the iovec array is in kernel memory (the bytes never are) */
	__u64 idx;      /* next iovec to load */
	__u64 skip;     /* bytes to skip in the first iovec */
	__u64 base;     /* current segment */
	__u64 seg_left; /* bytes left in the current segment */
	__u64 left;     /* bytes left to capture in this call */
	__u64 seq;
	__u32 truncated; /* bytes of the call beyond the cap, reported on its last record */
};

/*
 * Kept in a map, not on the stack: the verifier then sees its fields as
 * unknown scalars and checks the loop body once, instead of following every
 * iteration's exact values.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct emit_walk);
} walk_scratch SEC(".maps");

static long emit_chunk(__u64 index, void *arg)
{
	__u32 zero = 0;
	struct emit_walk *w = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!w || w->left == 0)
		return 1;
	if (w->seg_left == 0) {
		if (!w->iov || w->idx >= w->iovcnt || w->idx >= NT_IOV_MAX)
			return 1;
		struct iovec v = {};
		void *at = (void *)(w->iov + w->idx * sizeof(v));
		if (w->kernel_iov ? bpf_probe_read_kernel(&v, sizeof(v), at) : bpf_probe_read_user(&v, sizeof(v), at))
			return 1;
		w->base = (__u64)v.iov_base;
		w->seg_left = v.iov_len;
		if (w->idx == 0) {
			__u64 skip = w->skip < w->seg_left ? w->skip : w->seg_left;
			w->base += skip;
			w->seg_left -= skip;
		}
		w->idx++;
		return 0;
	}

	struct nt_data_event *ev = bpf_map_lookup_elem(&data_scratch, &zero);
	if (!ev)
		return 1;
	__u64 n = w->seg_left < w->left ? w->seg_left : w->left;
	if (n > NT_CHUNK_MAX)
		n = NT_CHUNK_MAX;
	/* Re-check on the same register so the verifier keeps the bound. */
	barrier_var(n);
	if (n > NT_CHUNK_MAX || n == 0)
		return 1;

	ev->seq = w->seq;
	ev->len = n;
	ev->truncated = (w->left == n) ? w->truncated : 0;
	if (bpf_probe_read_user(ev->payload, n, (void *)w->base)) {
		count_drop(NT_DROP_READ_FAULT, n);
	} else if (bpf_ringbuf_output(&events, ev, offsetof(struct nt_data_event, payload) + n,
				      quiet_wakeup(ev->hdr.ts_ns))) {
		count_drop(NT_DROP_RINGBUF_FULL_DATA, n);
	}
	w->seq += n;
	w->base += n;
	w->seg_left -= n;
	w->left -= n;
	return 0;
}

/*
 * Where a socket call's first bytes are in user memory: its buffer, or its
 * first iovec past the bytes already consumed; 0 when not known, or when
 * that segment holds fewer than `need` of them (0: any).
 */
static __always_inline __u64 first_segment(const struct inflight *io, __u64 need)
{
	if (io->kind == IO_PLAIN)
		return io->buf;
	if (io->kind != IO_IOV && io->kind != IO_KIOV)
		return 0;
	struct iovec v = {};
	if (io->kind == IO_KIOV ? bpf_probe_read_kernel(&v, sizeof(v), (void *)io->buf)
				: bpf_probe_read_user(&v, sizeof(v), (void *)io->buf))
		return 0;
	if (need && v.iov_len < io->skip + need)
		return 0;
	return (__u64)v.iov_base + io->skip;
}

/* Whether the call's first bytes are a TLS record header (type 20–23, version 3.x). */
static __always_inline bool starts_tls_record(const struct inflight *io)
{
	__u64 at = first_segment(io, 0);
	__u8 h[3] = {};
	if (!at || bpf_probe_read_user(h, sizeof(h), (void *)at))
		return false;
	return h[0] >= 20 && h[0] <= 23 && h[1] == 3 && h[2] <= 4;
}

/*
 * The first NT_BSSL_PREFIX bytes a socket call of `ret` bytes moved, into
 * `out`; false when they are not in one readable segment.
 */
static __always_inline bool first_bytes(const struct inflight *io, long ret, __u8 *out)
{
	if (ret < NT_BSSL_PREFIX)
		return false;
	__u64 at = first_segment(io, NT_BSSL_PREFIX);
	return at && bpf_probe_read_user(out, NT_BSSL_PREFIX, (void *)at) == 0;
}

/*
 * Plaintext held in the kernel until its socket was known (BoringSSL's
 * writes, rustls's reads): `len` bytes at `data` (a map value of at least
 * 2 × `max` bytes, `max` a constant) written as one chunk of `direction`
 * on `sk`, ahead of anything later.
 */
static __always_inline void emit_held(__u64 id, __u64 sk, __u16 probe, __u8 direction, const __u8 *data,
				      __u32 len, const __u32 max)
{
	__u32 n = len < max ? len : max;
	if (!n || !ports_wanted((struct sock *)sk))
		return;
	__u32 pid = id >> 32, tid = (__u32)id;
	struct conn_state *cs = conn_get((struct sock *)sk, probe, pid, tid, direction, 0);
	if (!cs)
		return;
	cs->tls = 1;
	__u64 seq = direction == NT_DIR_SEND ? __sync_fetch_and_add(&cs->tls_send_seq, (__u64)n)
					     : __sync_fetch_and_add(&cs->tls_recv_seq, (__u64)n);
	__u32 zero = 0;
	struct nt_data_event *ev = bpf_map_lookup_elem(&data_scratch, &zero);
	if (!ev)
		return;
	fill_header(&ev->hdr, NT_EV_DATA, probe, cs, pid, tid);
	ev->direction = direction;
	__u32 want = n < CONFIG.max_bytes_per_call ? n : CONFIG.max_bytes_per_call;
	if (want > max)
		want = max;
	ev->seq = seq;
	ev->len = want;
	ev->truncated = n - want;
	bpf_probe_read_kernel(ev->payload, want, data);
	if (bpf_ringbuf_output(&events, ev, offsetof(struct nt_data_event, payload) + want, quiet_wakeup(ev->hdr.ts_ns)))
		count_drop(NT_DROP_RINGBUF_FULL_DATA, want);
}

/*
 * The plaintext held for BoringSSL object `key` (boringssl.bpf.c), now that
 * its socket is known: written as sent on `sk`, ahead of anything later.
 */
static __always_inline void bssl_emit_held(const struct ssl_key *key, __u64 sk)
{
	struct bssl_held *h = bpf_map_lookup_elem(&bssl_held, key);
	if (!h)
		return;
	emit_held(bpf_get_current_pid_tgid(), sk, h->probe, NT_DIR_SEND, h->data, h->len, BSSL_HELD_MAX);
	bpf_map_delete_elem(&bssl_held, key);
}

/* Whether process `tgid` has BoringSSL records waiting for their socket. */
static __always_inline bool bssl_process(__u32 tgid)
{
	return bpf_map_lookup_elem(&bssl_tgids, &tgid) != NULL;
}

/*
 * Bytes sent on `io->sk` (`ret` of them, or at least NT_BSSL_PREFIX): if a
 * BoringSSL object of the same process wrote exactly these first bytes
 * into its memory BIO (boringssl.bpf.c), that object talks through the
 * socket. Exact bytes, not a thread or a time window: gRPC pulls the
 * ciphertext out of the BIO pair and sends it on whichever thread flushes
 * the endpoint. Called whatever the port filter says, as learn_ssl_socket
 * is, so an object on an unwanted port is bound too and its plaintext
 * dropped by the filter, not counted as unbound.
 */
static __always_inline void bssl_bind_sent(const struct inflight *io, long ret, __u32 pid)
{
	if (!bssl_process(pid))
		return;
	struct bssl_prefix key = { .tgid = pid };
	if (!first_bytes(io, ret, key.bytes))
		return;
	struct ssl_key *owner = bpf_map_lookup_elem(&bssl_sent, &key);
	if (!owner)
		return;
	struct ssl_key ssl = *owner;
	bpf_map_delete_elem(&bssl_sent, &key);
	bind_ssl_socket(&ssl, io->sk, 0);
	bssl_emit_held(&ssl, io->sk);
}

/*
 * Ciphertext read on `sk` outside an SSL call by thread `id`: the library
 * uses memory BIOs and this thread's next SSL_read may adopt the socket
 * (openssl.bpf.c).
 */
static __always_inline void note_tls_recv_outside_call(__u64 id, __u64 sk)
{
	__u64 *last = bpf_map_lookup_elem(&thread_tls_recv, &id);
	if (!last || *last != sk) /* a lookup costs less than an LRU update */
		bpf_map_update_elem(&thread_tls_recv, &id, &sk, BPF_ANY);
}

/*
 * A socket call on a connection: is it TLS ciphertext (then it is counted in
 * the socket's offsets but not written)? Known from a TLS library call in
 * progress on this thread (see learn_ssl_socket), or from the first bytes in
 * each direction.
 */
static __always_inline bool socket_bytes_are_tls(struct conn_state *cs, const struct inflight *io,
						 __u32 pid, __u32 tid)
{
	__u64 id = ((__u64)pid << 32) | tid;
	bool in_ssl_call = current_ssl_call() != NULL;
	if (in_ssl_call)
		cs->tls = 1;
	__u8 bit = 1 << io->direction;
	if (!cs->tls && !(cs->looked & bit)) {
		cs->looked |= bit;
		if (starts_tls_record(io))
			cs->tls = 1;
	}
	if (cs->tls && !in_ssl_call && io->direction == NT_DIR_RECV)
		note_tls_recv_outside_call(id, io->sk);
	return cs->tls;
}

#define NT_TCP_CLOSE 7

/*
 * Whether the call ended on a socket already closed, whose entry its close
 * took: on loopback a reset can come in while a write is still in the
 * kernel, so the close was reported before the call's bytes. A new entry
 * would be a false `midstream` after the close: the bytes are counted
 * instead (`conn_closed_in_call`), unless they are TLS records, which are
 * never written anyway.
 */
static __always_inline bool closed_in_call(struct sock *sk, const struct inflight *io, long ret, bool plaintext)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != NT_TCP_CLOSE)
		return false;
	__u64 key = (__u64)sk;
	if (conn_lookup(&key))
		return false;
	if (plaintext || !starts_tls_record(io))
		count_drop(NT_DROP_CLOSED_IN_CALL, ret);
	return true;
}

/*
 * Emit the payload of one finished call of `ret` bytes on `sk`: reserve its
 * byte range in the connection's direction, then one record per chunk.
 * `plaintext`: bytes a TLS library handed over (their own offsets); else
 * the socket's bytes, not written when they are TLS ciphertext. Whether
 * they were that: socket bytes counted and found to be TLS ciphertext.
 */
static __always_inline bool emit_call(const struct inflight *io, long ret, __u32 pid, __u32 tid,
				      bool plaintext)
{
	struct sock *sk = (struct sock *)io->sk;
	if (closed_in_call(sk, io, ret, plaintext))
		return false;
	struct conn_state *cs = conn_get(sk, io->probe, pid, tid, io->direction, plaintext ? 0 : ret);
	if (!cs)
		return false;
	__u64 *counter;
	if (plaintext) {
		cs->tls = 1;
		counter = io->direction == NT_DIR_SEND ? &cs->tls_send_seq : &cs->tls_recv_seq;
	} else {
		counter = io->direction == NT_DIR_SEND ? &cs->send_seq : &cs->recv_seq;
	}
	__u64 seq = __sync_fetch_and_add(counter, (__u64)ret);
	if (!plaintext && socket_bytes_are_tls(cs, io, pid, tid))
		return true;

	__u32 zero = 0;
	struct nt_data_event *ev = bpf_map_lookup_elem(&data_scratch, &zero);
	if (!ev)
		return false;
	fill_header(&ev->hdr, NT_EV_DATA, io->probe, cs, pid, tid);
	ev->direction = io->direction;

	__u64 cap = CONFIG.max_bytes_per_call;
	__u64 want = (__u64)ret < cap ? (__u64)ret : cap;
	if (io->kind == IO_NONE || want == 0) {
		ev->seq = seq;
		ev->len = 0;
		ev->truncated = ret;
		if (bpf_ringbuf_output(&events, ev, offsetof(struct nt_data_event, payload), quiet_wakeup(ev->hdr.ts_ns)))
			count_drop(NT_DROP_RINGBUF_FULL_DATA, 0);
		return false;
	}

	struct emit_walk *w = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!w)
		return false;
	__builtin_memset(w, 0, sizeof(*w));
	w->left = want;
	w->seq = seq;
	w->truncated = ret - want;
	if (io->kind == IO_PLAIN) {
		w->base = io->buf;
		w->seg_left = want;
	} else {
		w->iov = io->buf;
		w->iovcnt = io->count;
		w->skip = io->skip;
		w->kernel_iov = io->kind == IO_KIOV;
	}
	/* Enough iterations for every chunk of the largest cap plus every iovec load. */
	bpf_loop(1 << 17, emit_chunk, NULL, 0);
	if (w->left)
		count_drop(NT_DROP_READ_FAULT, w->left); /* iovecs ended or faulted */
	return false;
}

/*
 * TLS plaintext of `n` bytes at user address `buf`, returned by a TLS
 * library call of thread `id` on the connection of socket `sk`: the one
 * emit path of every TLS probe family (OpenSSL, Go). A call whose socket
 * was never found is counted, never guessed.
 */
static __always_inline int emit_tls_plaintext(__u64 sk, __u64 buf, long n, __u16 probe, __u8 direction, __u64 id)
{
	if (!sk) {
		count_drop(NT_DROP_TLS_NO_SOCKET, n);
		return 0;
	}
	struct inflight io = {
		.sk = sk,
		.buf = buf,
		.probe = probe,
		.kind = IO_PLAIN,
		.direction = direction,
	};
	emit_call(&io, n, id >> 32, (__u32)id, true);
	return 0;
}

#endif

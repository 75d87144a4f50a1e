/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Included by rustls.bpf.c: plaintext read before its connection's new
 * address is bound, held until it is.
 *
 * tokio-rustls returns a server connection by value once its handshake is
 * done (accept().await), so the ConnectionCommon moves. A request that came
 * with the client's last handshake flight was decrypted by the handshake's
 * deframer read at the old address; the first plaintext reads then drain it
 * at the new address, where no deframer read has happened yet (rustls does
 * not read while plaintext is buffered). Those reads are held here, keyed
 * by a candidate socket (the one of the thread's last deframer read, which
 * was the handshake's), and emitted when a second witness binds the new
 * address to that same socket, still the same connection:
 *
 * - a deframer read there followed by a plaintext read of the same key (the
 *   normal read binding), or
 * - a write of that connection bound to the socket (its records seen going
 *   out), when the read key is at the confirmed distance from the write key
 *   (RUSTLS_DELTA_RW: rustls_rw_vote) — the server's answer, so the request
 *   is emitted before it.
 *
 * Nothing is emitted on one witness alone. Held bytes are counted unbound
 * when their hold ends otherwise: a read of another key for the socket, the
 * socket's connection replaced, more than RUSTLS_HELD_MAX bytes (the rest is
 * counted, and shown as a gap once bound), a full map.
 */

#define RUSTLS_HELD_MAX 4096 /* one deframer read of rustls 0.23 is at most 4096 bytes */

struct rustls_held_read {
	__u64 key; /* the read key (received-plaintext buffer) at the new address */
	__u64 fn;  /* the read function (for the read binding it takes) */
	__u64 conn_id;
	__u32 tgid;
	__u32 len;
	__u32 tid; /* the thread that held it */
	__u32 _pad;
	__u64 voted; /* its connection voted on the read−write distance (once) */
	__u8 data[2 * RUSTLS_HELD_MAX]; /* twice: the verifier sees offset + length within */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* not LRU: an eviction would lose its count */
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* see maps.bpf.h */
	__type(key, __u64); /* the candidate socket */
	__type(value, struct rustls_held_read);
} rustls_held_reads SEC(".maps");

/* A read key with bytes held → the candidate socket they are held under. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ssl_key);
	__type(value, __u64);
} rustls_held_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rustls_held_read);
} rustls_held_scratch SEC(".maps");

/* The read key last bound to a socket by a read binding (for RUSTLS_DELTA_RW). */
struct rustls_sock_reader {
	__u64 key;
	__u64 conn_id;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* socket */
	__type(value, struct rustls_sock_reader);
} rustls_sock_readers SEC(".maps");

static __always_inline void rustls_held_forget(__u64 sk, struct rustls_held_read *h)
{
	struct ssl_key k = { .ssl = h->key, .tgid = h->tgid };
	bpf_map_delete_elem(&rustls_held_keys, &k);
	bpf_map_delete_elem(&rustls_held_reads, &sk);
}

/* Held bytes whose hold ended without a binding: counted as one unbound
 * read, and a gap of their size at their key (should it be bound later, its
 * stream shows them missing rather than joining what came before and after). */
static __always_inline void rustls_held_drop(__u64 sk, struct rustls_held_read *h)
{
	rustls_unbound(h->key, h->tgid, NT_DIR_RECV, h->len);
	rustls_held_forget(sk, h);
}

/*
 * Holds `n` plaintext bytes at `buf` read through key `key` by function
 * `fn`, whose only socket candidate is `cand` (the thread's last deframer
 * read, taken by this read; key 0: none). Else counts them unbound.
 */
static __always_inline void rustls_hold_read(__u64 id, __u64 fn, __u64 key, __u64 buf, __u64 n,
					     const struct rustls_io *cand)
{
	__u32 tgid = id >> 32;
	struct ssl_key k = { .ssl = key, .tgid = tgid };
	struct rustls_gap_key gk = { .key = key, .tgid = tgid, .direction = NT_DIR_RECV };
	if (bpf_map_lookup_elem(&rustls_gaps, &gk))
		goto unbound; /* bytes are missing before these: they go with them */
	__u64 sk = 0;
	__u64 *held_sk = bpf_map_lookup_elem(&rustls_held_keys, &k);
	if (held_sk)
		sk = *held_sk;
	else if (cand->key && rustls_live_socket(cand))
		sk = cand->sk;
	if (!sk)
		goto unbound;
	__u64 conn_id = rustls_conn_id(sk);
	struct rustls_held_read *h = bpf_map_lookup_elem(&rustls_held_reads, &sk);
	if (h && (h->key != key || h->tgid != tgid || h->conn_id != conn_id)) {
		/* Another read key under this socket, or a connection gone. */
		rustls_held_drop(sk, h);
		h = NULL;
	}
	if (!h) {
		if (held_sk || !conn_id)
			goto unbound;
		__u32 zero = 0;
		struct rustls_held_read *init = bpf_map_lookup_elem(&rustls_held_scratch, &zero);
		if (!init)
			goto unbound;
		init->key = key;
		init->fn = fn;
		init->conn_id = conn_id;
		init->tgid = tgid;
		init->tid = (__u32)id;
		init->len = 0;
		init->voted = 0;
		if (bpf_map_update_elem(&rustls_held_reads, &sk, init, BPF_NOEXIST))
			goto unbound;
		h = bpf_map_lookup_elem(&rustls_held_reads, &sk);
		if (!h)
			goto unbound;
		bpf_map_update_elem(&rustls_held_keys, &k, &sk, BPF_ANY);
	}
	__u64 off = h->len;
	if (n > RUSTLS_HELD_MAX || off + n > RUSTLS_HELD_MAX)
		goto unbound; /* the held bytes stay; these become a gap after them */
	off &= RUSTLS_HELD_MAX - 1;
	if (bpf_probe_read_user(&h->data[off], n, (void *)buf))
		goto unbound;
	h->len += n;
	return;
unbound:
	rustls_unbound(key, tgid, NT_DIR_RECV, n);
}

/* Emits the bytes held under `sk` as received on it, then forgets them. */
static __always_inline void rustls_held_emit(__u64 id, __u64 sk, struct rustls_held_read *h)
{
	emit_held(id, sk, NT_PROBE_UPROBE_RUSTLS_READ, NT_DIR_RECV, h->data, h->len, RUSTLS_HELD_MAX);
	rustls_held_forget(sk, h);
}

/* Read key `key` was just bound to `sk` by a read binding: bytes held for it
 * there go first; another key's held there are counted. */
static __always_inline void rustls_held_on_read_bound(__u64 id, __u64 key, __u64 sk, __u64 conn_id)
{
	struct rustls_sock_reader r = { .key = key, .conn_id = conn_id, .tgid = id >> 32 };
	bpf_map_update_elem(&rustls_sock_readers, &sk, &r, BPF_ANY);
	struct rustls_held_read *h = bpf_map_lookup_elem(&rustls_held_reads, &sk);
	if (!h)
		return;
	if (h->key == key && h->tgid == id >> 32 && h->conn_id == conn_id)
		rustls_held_emit(id, sk, h);
	else
		rustls_held_drop(sk, h);
}

/* Read key `key` is the connection of deframer read `io`, whose socket is
 * live: later reads of that key take its socket, bytes held for it there go
 * first, and a gap counted at the key moves onto the connection. */
static __always_inline void rustls_bind_read(__u64 id, __u64 key, const struct rustls_io *io)
{
	struct ssl_key rk = { .ssl = key, .tgid = id >> 32 };
	bpf_map_update_elem(&rustls_readers, &rk, io, BPF_ANY);
	rustls_held_on_read_bound(id, key, io->sk, io->conn_id);
	rustls_apply_gap(key, id, NT_DIR_RECV, io->sk);
}

/*
 * A deframer read on this thread just bound its buffer `io->key` to
 * `io->sk` (bytes or none: it found the connection's socket). Bytes this
 * thread holds under that socket, of that connection, whose key is at the
 * read function's distance from the buffer (learnt, or learnt now as a
 * read binding would) are this connection's: the second witness, before
 * the answer is written (a request that came with the handshake, read at
 * the connection's new address, then the read that finds nothing more).
 */
static __always_inline void rustls_held_on_deframer_read(__u64 id, const struct rustls_io *io)
{
	struct rustls_held_read *h = bpf_map_lookup_elem(&rustls_held_reads, &io->sk);
	if (!h || h->tgid != id >> 32 || h->tid != (__u32)id || h->conn_id != io->conn_id)
		return;
	__u64 key = h->key;
	if (!rustls_same_conn(h->fn, id >> 32, key, io->key))
		return;
	rustls_bind_read(id, key, io);
}

/*
 * A vote for `delta` as the read−write key distance of write function `wfn`:
 * weight 2 from a socket whose read key and write key were both bound
 * exactly, 1 from a held read's key and a write bound to the socket it was
 * held under (the held key is only a candidate there). Confirmed from a
 * total of 2 on one value: one exact pair, or two connections' candidates
 * agreeing (unrelated objects do not keep one distance); an unconfirmed
 * value that another vote contradicts is replaced. Weight 0 only asks.
 * Whether it is confirmed.
 */
static __always_inline bool rustls_rw_vote(__u64 wfn, __u32 tgid, __s64 delta, __u64 weight)
{
	if (delta <= -RUSTLS_MAX_DELTA || delta >= RUSTLS_MAX_DELTA)
		return false;
	struct rustls_fn k = { .fn = wfn, .tgid = tgid, .kind = RUSTLS_DELTA_RW };
	struct rustls_delta *d = bpf_map_lookup_elem(&rustls_deltas, &k);
	if (!weight)
		return d && d->delta == delta && d->agreed >= 2;
	if (!d) {
		struct rustls_delta first = { .delta = delta, .agreed = weight };
		bpf_map_update_elem(&rustls_deltas, &k, &first, BPF_NOEXIST);
		return weight >= 2;
	}
	if (d->delta == delta) {
		__sync_fetch_and_add(&d->agreed, weight);
		return d->agreed >= 2;
	}
	if (d->agreed < 2) {
		d->delta = delta;
		d->agreed = weight;
		return weight >= 2;
	}
	__sync_fetch_and_add(&d->conflicts, 1);
	return false;
}

/* Write key `wkey` of write function `wfn` was just bound to `sk`: votes on
 * the read key's distance from it (rustls_rw_vote), and releases bytes held
 * under `sk` whose key is at the confirmed distance. */
static __always_inline void rustls_held_on_write_bound(__u64 id, __u64 wfn, __u64 wkey, __u64 sk)
{
	__u32 tgid = id >> 32;
	__u64 conn_id = rustls_conn_id(sk);
	struct rustls_sock_reader *r = bpf_map_lookup_elem(&rustls_sock_readers, &sk);
	if (r && r->tgid == tgid && r->conn_id == conn_id && conn_id)
		rustls_rw_vote(wfn, tgid, (__s64)(r->key - wkey), 2);
	struct rustls_held_read *h = bpf_map_lookup_elem(&rustls_held_reads, &sk);
	if (!h || h->tgid != tgid)
		return;
	if (h->conn_id != conn_id) {
		rustls_held_drop(sk, h);
		return;
	}
	/* One vote per connection: its later writes only ask. */
	__u64 weight = h->voted ? 0 : 1;
	h->voted = 1;
	if (!rustls_rw_vote(wfn, tgid, (__s64)(h->key - wkey), weight))
		return; /* not known to be this connection's (yet): the read binding may still come */
	__u64 key = h->key;
	/* Later reads of what is still buffered at that key are this socket's. */
	struct ssl_key rk = { .ssl = key, .tgid = tgid };
	struct rustls_io io = { .key = key, .sk = sk, .conn_id = conn_id };
	bpf_map_update_elem(&rustls_readers, &rk, &io, BPF_ANY);
	rustls_held_emit(id, sk, h);
	rustls_apply_gap(key, id, NT_DIR_RECV, sk);
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TLS plaintext from rustls, linked into Rust programs (probes/rustls.rs
 * finds the functions by their demangled names). rustls never sees a file
 * descriptor: the plaintext calls (<ConnectionCommon<_> as
 * PlaintextSink>::write, Reader::read) only fill and drain buffers, and the
 * application moves ciphertext with other calls that take a `&mut dyn
 * io::Read/Write` (ChunkVecBuffer::write_to for the records to send, the
 * deframer's read for the records received). So:
 *
 * - The ciphertext calls are windows: a socket syscall of the same thread
 *   inside one binds that buffer's address to the socket (ssl_calls and
 *   learn_ssl_socket, shared with OpenSSL), exactly.
 * - A plaintext call names its connection by another address of the same
 *   object (the ConnectionCommon for a write; its received-plaintext buffer
 *   for a read). The distance between that address and the ciphertext
 *   buffer's is fixed per compiled function (one struct layout); it is
 *   learnt per process and function from the first plaintext call followed
 *   (write) or preceded (read) by a ciphertext call on the same thread, as
 *   tokio-rustls's poll_write/poll_read and rustls's Stream do, and checked
 *   on every later pair.
 * - A write is held until the next write_to on its thread and emitted only
 *   if that write_to is its own connection's (at the learnt distance): the
 *   socket is then the one its records go to, seen now. A read is emitted
 *   with the socket of the deframer read just before it on its thread at
 *   the learnt distance, or, for plaintext already buffered, the socket its
 *   buffer was bound to by such a read before.
 * Anything else is counted as tls_unbound, never given a guessed socket.
 */

#include "emit.bpf.h"

/* io::Result<usize> comes back in two registers: the tag (0 = Ok), then the
 * value. A 16-byte Result<&[u8], io::Error> comes back in memory, through
 * the pointer the caller passes (sret: rdi on x86_64, x8 on arm64; the
 * arguments then start at rsi on x86_64, x0 on arm64). */
#if defined(__TARGET_ARCH_x86)
#define RS_RET1(r) ((r)->dx)
#define RS_SRET(r) PT_REGS_PARM1(r)
#define RS_SRET_ARG1(r) PT_REGS_PARM2(r)
#elif defined(__TARGET_ARCH_arm64)
#define RS_RET1(r) ((r)->regs[1])
#define RS_SRET(r) ((r)->regs[8])
#define RS_SRET_ARG1(r) PT_REGS_PARM1(r)
#endif

/* The largest distance accepted between two addresses of one connection
 * (measured: 0x88 and -0x3b0 in rustls 0.23; a ConnectionCommon is ~1.5 KiB). */
#define RUSTLS_MAX_DELTA 4096

/* A plaintext call in flight (entry to return), or a write held for its write_to. */
struct rustls_call {
	__u64 key; /* the ConnectionCommon (write) or its received-plaintext buffer (read) */
	__u64 buf;
	__u64 fn;  /* the function's address in the process: distances are per function */
	__u64 n;   /* held writes: bytes taken */
	__u64 iovcnt; /* write_vectored: `buf` is that many IoSlices (iovecs); else 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* see maps.bpf.h */
	__type(key, __u64); /* pid_tgid */
	__type(value, struct rustls_call);
} rustls_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* see maps.bpf.h */
	__type(key, __u64); /* pid_tgid */
	__type(value, struct rustls_call);
} rustls_held SEC(".maps");

/* The deframer read that last ended on a thread: its buffer and socket
 * (and the socket's connection id, so a socket closed and reused since is
 * not taken for it). */
struct rustls_io {
	__u64 key;
	__u64 sk;
	__u64 conn_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct rustls_io);
} rustls_last_read SEC(".maps");

/* A read key (a connection's plaintext buffer) → its socket, bound by a
 * read right after that connection's deframer read. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ssl_key);
	__type(value, struct rustls_io);
} rustls_readers SEC(".maps");

/* The socket of `io` if its connection is still the one seen then (memory
 * of a connection that ended may hold another one now), else 0. */
static __always_inline __u64 rustls_live_socket(const struct rustls_io *io)
{
	struct conn_state *cs = conn_lookup(&io->sk);
	return cs && cs->conn_id == io->conn_id ? io->sk : 0;
}

static __always_inline __u64 rustls_conn_id(__u64 sk)
{
	struct conn_state *cs = conn_lookup(&sk);
	return cs ? cs->conn_id : 0;
}

struct rustls_fn {
	__u64 fn;
	__u32 tgid;
	__u32 kind; /* RUSTLS_DELTA_* */
};

/* Ciphertext buffer − plaintext key, per plaintext function. */
#define RUSTLS_DELTA_IO 0
/* Read key − write key (the received-plaintext buffer − the ConnectionCommon)
 * per write function (one per connection type, so one layout). */
#define RUSTLS_DELTA_RW 1

/* Learnt distance per process, function and kind. */
struct rustls_delta {
	__s64 delta;
	__u64 agreed;    /* pairs that confirmed it */
	__u64 conflicts; /* pairs that did not (their bytes were counted unbound) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct rustls_fn);
	__type(value, struct rustls_delta);
} rustls_deltas SEC(".maps");

/* Whether `io_key` (a ciphertext buffer) belongs to the connection of
 * plaintext key `key` of function `fn`; learns the distance on first sight. */
static __always_inline bool rustls_same_conn_kind(__u64 fn, __u32 tgid, __u64 key, __u64 io_key, __u32 kind)
{
	struct rustls_fn k = { .fn = fn, .tgid = tgid, .kind = kind };
	__s64 delta = (__s64)(io_key - key);
	struct rustls_delta *d = bpf_map_lookup_elem(&rustls_deltas, &k);
	if (!d) {
		if (delta <= -RUSTLS_MAX_DELTA || delta >= RUSTLS_MAX_DELTA)
			return false;
		struct rustls_delta learnt = { .delta = delta, .agreed = 1 };
		bpf_map_update_elem(&rustls_deltas, &k, &learnt, BPF_NOEXIST);
		d = bpf_map_lookup_elem(&rustls_deltas, &k);
		return d && d->delta == delta;
	}
	if (d->delta == delta) {
		__sync_fetch_and_add(&d->agreed, 1);
		return true;
	}
	return false;
}

static __always_inline bool rustls_same_conn(__u64 fn, __u32 tgid, __u64 key, __u64 io_key)
{
	return rustls_same_conn_kind(fn, tgid, key, io_key, RUSTLS_DELTA_IO);
}

static __always_inline void rustls_count_conflict(__u64 fn, __u32 tgid)
{
	struct rustls_fn k = { .fn = fn, .tgid = tgid };
	struct rustls_delta *d = bpf_map_lookup_elem(&rustls_deltas, &k);
	if (d)
		__sync_fetch_and_add(&d->conflicts, 1);
}

/*
 * Bytes of a connection key (write: ConnectionCommon; read: its plaintext
 * buffer) that could not be bound when they moved: counted unbound then, and
 * added to the connection's plaintext offset once the key is bound, so its
 * stream shows a gap there instead of joining what came before and after.
 * (A connection object moved in memory with plaintext already buffered
 * reads it under a new address before any ciphertext call there binds it.)
 */
struct rustls_gap_key {
	__u64 key;
	__u32 tgid;
	__u32 direction;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rustls_gap_key);
	__type(value, __u64);
} rustls_gaps SEC(".maps");

static __always_inline void rustls_unbound(__u64 key, __u32 tgid, __u8 direction, __u64 n)
{
	count_drop(NT_DROP_TLS_UNBOUND, n);
	struct rustls_gap_key k = { .key = key, .tgid = tgid, .direction = direction };
	__u64 *gap = bpf_map_lookup_elem(&rustls_gaps, &k);
	if (gap)
		__sync_fetch_and_add(gap, n);
	else
		bpf_map_update_elem(&rustls_gaps, &k, &n, BPF_NOEXIST);
}

/* `key` is now bound to `sk`: its unbound bytes are reported on the
 * connection as a chunk not captured (their offsets, length 0, all
 * truncated), so the stream shows the gap where it was. */
static __always_inline void rustls_apply_gap(__u64 key, __u64 id, __u8 direction, __u64 sk)
{
	struct rustls_gap_key k = { .key = key, .tgid = id >> 32, .direction = direction };
	__u64 *gap = bpf_map_lookup_elem(&rustls_gaps, &k);
	if (!gap)
		return;
	__u64 n = *gap;
	bpf_map_delete_elem(&rustls_gaps, &k);
	if (!ports_wanted((struct sock *)sk))
		return;
	struct inflight io = {
		.sk = sk,
		.probe = direction == NT_DIR_SEND ? NT_PROBE_UPROBE_RUSTLS_WRITE : NT_PROBE_UPROBE_RUSTLS_READ,
		.kind = IO_NONE,
		.direction = direction,
	};
	emit_call(&io, n, id >> 32, (__u32)id, true);
}

#include "rustls_held.bpf.h"

/* ---- ciphertext windows ---- */

static __always_inline int rustls_window_enter(struct pt_regs *ctx, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct ssl_call call = {
		.ssl = PT_REGS_PARM1(ctx),
		.direction = direction,
	};
	if (!begin_ssl_call(&call))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

/* The window's buffer and its socket (0: none known); ends the window. */
static __always_inline struct rustls_io rustls_window_exit(__u64 id, __u8 direction)
{
	struct rustls_io io = {};
	struct ssl_call *p = current_ssl_call();
	if (!p || p->probe != 0 || p->direction != direction)
		return io;
	io.key = p->ssl;
	p->active = 0;
	struct ssl_key key = { .ssl = io.key, .tgid = id >> 32 };
	struct ssl_binding *b = bpf_map_lookup_elem(&ssl_sockets, &key);
	io.sk = b ? b->sk : 0;
	return io;
}

/* ChunkVecBuffer::write_to(&mut self = the connection's sendable_tls, &mut dyn Write) */
NT_UPROBE(up_rustls_write_tls)
{
	return rustls_window_enter(ctx, NT_DIR_SEND);
}

NT_URETPROBE(ur_rustls_write_tls)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rustls_io io = rustls_window_exit(id, NT_DIR_SEND);
	/* A window that moved nothing keeps the buffer's earlier binding; one
	 * left by a connection that has closed since is not taken. */
	if (io.sk && !rustls_conn_id(io.sk))
		io.sk = 0;
	struct rustls_call *held = bpf_map_lookup_elem(&rustls_held, &id);
	if (!held || !io.key)
		return 0;
	struct rustls_call w = *held;
	bpf_map_delete_elem(&rustls_held, &id);
	if (!io.sk || !rustls_same_conn(w.fn, id >> 32, w.key, io.key)) {
		if (io.sk)
			rustls_count_conflict(w.fn, id >> 32);
		rustls_unbound(w.key, id >> 32, NT_DIR_SEND, w.n);
		return 0;
	}
	rustls_held_on_write_bound(id, w.fn, w.key, io.sk);
	rustls_apply_gap(w.key, id, NT_DIR_SEND, io.sk);
	if (!ports_wanted((struct sock *)io.sk))
		return 0;
	if (!w.iovcnt)
		return emit_tls_plaintext(io.sk, w.buf, w.n, NT_PROBE_UPROBE_RUSTLS_WRITE, NT_DIR_SEND, id);
	/* IoSlice is an iovec on Unix: the first n bytes across them. */
	struct inflight out = {
		.sk = io.sk,
		.buf = w.buf,
		.count = w.iovcnt,
		.probe = NT_PROBE_UPROBE_RUSTLS_WRITE,
		.kind = IO_IOV,
		.direction = NT_DIR_SEND,
	};
	emit_call(&out, w.n, id >> 32, (__u32)id, true);
	return 0;
}

/* The deframer's read(&mut self, &mut dyn Read, …): MessageDeframer (0.21,
 * 0.22) or DeframerVecBuffer (0.23), a field of the ConnectionCommon. */
NT_UPROBE(up_rustls_read_tls)
{
	return rustls_window_enter(ctx, NT_DIR_RECV);
}

NT_URETPROBE(ur_rustls_read_tls)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rustls_io io = rustls_window_exit(id, NT_DIR_RECV);
	io.conn_id = rustls_conn_id(io.sk);
	if (io.key && io.sk && io.conn_id) {
		bpf_map_update_elem(&rustls_last_read, &id, &io, BPF_ANY);
		rustls_held_on_deframer_read(id, &io);
		return 0;
	}
	/* Nothing read (would block) on the same connection: what it read
	 * before stays the thread's last read; another connection's ends it. */
	struct rustls_io *last = bpf_map_lookup_elem(&rustls_last_read, &id);
	if (last && last->key != io.key)
		bpf_map_delete_elem(&rustls_last_read, &id);
	return 0;
}

/* ---- plaintext ---- */

static __always_inline int rustls_plain_enter(struct pt_regs *ctx, __u64 key)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct rustls_call call = { .key = key, .buf = PT_REGS_PARM2(ctx), .fn = PT_REGS_IP(ctx) };
	if (bpf_map_update_elem(&rustls_calls, &id, &call, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

/* The finished call and its byte count (0: an error or nothing moved). */
static __always_inline __u64 rustls_plain_exit(struct pt_regs *ctx, __u64 id, struct rustls_call *out)
{
	struct rustls_call *p = bpf_map_lookup_elem(&rustls_calls, &id);
	if (!p)
		return 0;
	*out = *p;
	bpf_map_delete_elem(&rustls_calls, &id);
	if (PT_REGS_RC(ctx) != 0) /* Err */
		return 0;
	return RS_RET1(ctx);
}

/* <ConnectionCommon<Data> as PlaintextSink>::write(&mut self, buf: &[u8]) -> io::Result<usize> */
NT_UPROBE(up_rustls_write)
{
	return rustls_plain_enter(ctx, PT_REGS_PARM1(ctx));
}

static __always_inline int rustls_write_exit(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rustls_call call = {};
	__u64 n = rustls_plain_exit(ctx, id, &call);
	if (!n)
		return 0;
	/* A write still held had no write_to of its own before this one. */
	struct rustls_call *stale = bpf_map_lookup_elem(&rustls_held, &id);
	if (stale)
		rustls_unbound(stale->key, id >> 32, NT_DIR_SEND, stale->n);
	call.n = n;
	bpf_map_update_elem(&rustls_held, &id, &call, BPF_ANY);
	return 0;
}

NT_URETPROBE(ur_rustls_write)
{
	return rustls_write_exit(ctx);
}

/* <ConnectionCommon<Data> as PlaintextSink>::write_vectored(&mut self, bufs: &[IoSlice]) -> io::Result<usize> */
NT_UPROBE(up_rustls_write_vectored)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32) || !PT_REGS_PARM3(ctx))
		return 0;
	struct rustls_call call = {
		.key = PT_REGS_PARM1(ctx),
		.buf = PT_REGS_PARM2(ctx),
		.fn = PT_REGS_IP(ctx),
		.iovcnt = PT_REGS_PARM3(ctx),
	};
	if (bpf_map_update_elem(&rustls_calls, &id, &call, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

NT_URETPROBE(ur_rustls_write_vectored)
{
	return rustls_write_exit(ctx);
}

/* The socket of plaintext just read through Reader `key` by function `fn`:
 * the deframer read just before on this thread if it is the same
 * connection's (the buffer is then bound for later reads of what was
 * buffered), else the buffer's binding. 0: unknown. */
static __always_inline __u64 rustls_read_socket(__u64 id, __u64 fn, __u64 reader_key, struct rustls_io *cand)
{
	__u32 tgid = id >> 32;
	struct ssl_key key = { .ssl = reader_key, .tgid = tgid };
	struct rustls_io *last = bpf_map_lookup_elem(&rustls_last_read, &id);
	if (last) {
		/* One read per deframer read: a later read on this thread (of
		 * another connection, maybe at memory this one left) never takes it. */
		struct rustls_io io = *last;
		bpf_map_delete_elem(&rustls_last_read, &id);
		__u64 sk = rustls_live_socket(&io);
		if (sk && rustls_same_conn(fn, tgid, reader_key, io.key)) {
			rustls_bind_read(id, reader_key, &io);
			return sk;
		}
		/* Not this read's: the socket it may be held under (rustls_held.bpf.h). */
		if (sk)
			*cand = io;
	}
	struct rustls_io *bound = bpf_map_lookup_elem(&rustls_readers, &key);
	return bound ? rustls_live_socket(bound) : 0;
}

static __always_inline int rustls_emit_read(__u64 id, __u64 fn, __u64 reader_key, __u64 buf, __u64 n)
{
	struct rustls_io cand = {};
	__u64 sk = rustls_read_socket(id, fn, reader_key, &cand);
	if (!sk) {
		rustls_hold_read(id, fn, reader_key, buf, n, &cand);
		return 0;
	}
	if (!ports_wanted((struct sock *)sk))
		return 0;
	return emit_tls_plaintext(sk, buf, n, NT_PROBE_UPROBE_RUSTLS_READ, NT_DIR_RECV, id);
}

/* <Reader as io::Read>::read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
 * a Reader's first word is its `received_plaintext: &mut ChunkVecBuffer`. */
NT_UPROBE(up_rustls_read)
{
	__u64 key = 0;
	bpf_probe_read_user(&key, sizeof(key), (void *)PT_REGS_PARM1(ctx));
	return rustls_plain_enter(ctx, key);
}

NT_URETPROBE(ur_rustls_read)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rustls_call call = {};
	__u64 n = rustls_plain_exit(ctx, id, &call);
	if (!n)
		return 0;
	return rustls_emit_read(id, call.fn, call.key, call.buf, n);
}

/*
 * The BufRead way (0.23; tokio-rustls's poll_read): Reader::into_first_chunk
 * (self by reference) -> io::Result<&[u8]> gives the first buffered chunk,
 * then <Reader as BufRead>::consume(&mut self, amt) takes amt bytes of it.
 * The chunk is remembered per thread between the two.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* see maps.bpf.h */
	__type(key, __u64); /* pid_tgid */
	__type(value, struct rustls_call);
} rustls_chunks SEC(".maps");

NT_UPROBE(up_rustls_first_chunk)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct rustls_call call = { .buf = RS_SRET(ctx), .fn = PT_REGS_IP(ctx) };
	bpf_probe_read_user(&call.key, sizeof(call.key), (void *)RS_SRET_ARG1(ctx));
	if (bpf_map_update_elem(&rustls_calls, &id, &call, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

NT_URETPROBE(ur_rustls_first_chunk)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rustls_call *p = bpf_map_lookup_elem(&rustls_calls, &id);
	if (!p)
		return 0;
	struct rustls_call call = *p;
	bpf_map_delete_elem(&rustls_calls, &id);
	__u64 slice[2] = {}; /* Ok: (ptr, len); Err: (0, error) */
	if (bpf_probe_read_user(slice, sizeof(slice), (void *)call.buf) || !slice[0] || !slice[1]) {
		bpf_map_delete_elem(&rustls_chunks, &id);
		return 0;
	}
	call.buf = slice[0];
	call.n = slice[1];
	bpf_map_update_elem(&rustls_chunks, &id, &call, BPF_ANY);
	return 0;
}

NT_UPROBE(up_rustls_consume)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	__u64 key = 0, amt = PT_REGS_PARM2(ctx);
	bpf_probe_read_user(&key, sizeof(key), (void *)PT_REGS_PARM1(ctx));
	struct rustls_call *c = bpf_map_lookup_elem(&rustls_chunks, &id);
	if (!c || c->key != key || amt > c->n) {
		if (amt)
			rustls_unbound(key, id >> 32, NT_DIR_RECV, amt);
		return 0;
	}
	struct rustls_call chunk = *c;
	bpf_map_delete_elem(&rustls_chunks, &id);
	if (!amt)
		return 0;
	return rustls_emit_read(id, chunk.fn, key, chunk.buf, amt);
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps and load-time settings shared by every program family in nettap.bpf.c. */
#ifndef NETTAP_MAPS_BPF_H
#define NETTAP_MAPS_BPF_H

#include "events.h"

/* Plain hash maps of calls in progress and of held bytes carry
 * BPF_F_NO_PREALLOC: they hold a few entries at a time on most hosts, and
 * preallocated they cost their full size in kernel memory from load
 * (rustls_held_reads alone 2 MiB; 4.3 MiB together). LRU maps cannot drop
 * preallocation (the kernel refuses it), so they are sized instead. */

/* Set by the sensor before load (aya: EbpfLoader::set_global). */
const volatile struct nt_config CONFIG = {
	.max_bytes_per_call = 256 * 1024,
};

/* Source of nt_conn_ident.conn_id: never reused while the object is loaded. */
__u64 next_conn_id = 1;

/* Every record goes through this one ring buffer; the sensor resizes it before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* What could not be kept, per reason; the sensor turns deltas into `drop` records. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_DROP_REASON_MAX);
	__type(key, __u32);
	__type(value, struct nt_drop_counter);
} drops SEC(".maps");

/* A connection's addresses (IPv4 as IPv4-mapped IPv6), ports (host byte
 * order) and network namespace: fixed once it is established. */
struct conn_ends {
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u16 _pad;
	__u32 netns;
};

/* Per-socket state: identity and the byte offsets that become `seq`. */
struct conn_state {
	__u64 conn_id;
	__u64 send_seq;    /* bytes on the wire, as the socket moved them */
	__u64 recv_seq;
	__u64 tls_send_seq; /* TLS plaintext, as the application passed it */
	__u64 tls_recv_seq;
	__u32 pid;  /* tgid that opened it or first used it */
	__u8 role;  /* enum nt_role */
	__u8 tls;   /* 1: TLS; the socket's own bytes are ciphertext and not written */
	__u8 looked; /* bit per direction: first bytes already checked for a TLS record */
	__u8 _pad;
	/* Read from the socket when the entry is made, so that every record of
	 * the connection copies them instead of reading them again (seven
	 * kernel reads, ~0.4 µs a record on our machines). */
	struct conn_ends ends;
};

/*
 * Tracked sockets live in two tables. `conns` is a hash that allocates its
 * entries as sockets appear (BPF_F_NO_PREALLOC): a node sized for 262 144
 * sockets pays ~4 MiB of buckets plus 160 B per socket it tracks
 * (measured), where a preallocated table paid all 30 MiB from load. It
 * never evicts; a close removes its entry (a close the kernel skipped
 * leaves one until the socket's memory is reused by a new one, whose open
 * overwrites it).
 * Once it is full, new sockets go to `conns_spill`, an LRU (which the
 * kernel preallocates: it is kept small): there an entry whose close we
 * never saw ages out instead of filling the table, and an entry evicted
 * while its connection lives is recognised in user space when the socket
 * is seen again (its endpoints) or closes (see conn_pressure). The sensor
 * sizes both so that together they hold max_connections.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* set by the sensor before load */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64); /* struct sock * */
	__type(value, struct conn_state);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* set by the sensor before load */
	__type(key, __u64); /* struct sock * */
	__type(value, struct conn_state);
} conns_spill SEC(".maps");

/* Entries ever added to `conns` and `conns_spill`, and removed by a close:
 * with the evictions user space has found, an estimate of the entries (and
 * evicted entries not yet found) the tables hold, kept here so it never
 * lags. */
__u64 conn_entries_added = 0;
__u64 conn_entries_closed = 0;

/* The tracked state of socket `key`, in either table. */
static __always_inline struct conn_state *conn_lookup(const __u64 *key)
{
	struct conn_state *cs = bpf_map_lookup_elem(&conns, key);
	return cs ? cs : bpf_map_lookup_elem(&conns_spill, key);
}

#define NT_EEXIST 17

/* Stores `st` for `key` (BPF_ANY or BPF_NOEXIST), in the spill table once
 * the main one is full; 0 when stored. A stored entry is counted. */
static __always_inline long conn_store(__u64 *key, struct conn_state *st, __u64 flags)
{
	long err = bpf_map_update_elem(&conns, key, st, flags);
	if (err && err != -NT_EEXIST)
		err = bpf_map_update_elem(&conns_spill, key, st, flags);
	if (!err)
		__sync_fetch_and_add(&conn_entries_added, 1);
	return err;
}

/* Forgets socket `key` in both tables (an address once in the spill table
 * may be in the main one now, as a new socket), counting what it removed. */
static __always_inline void conn_forget(__u64 *key)
{
	if (!bpf_map_delete_elem(&conns, key))
		__sync_fetch_and_add(&conn_entries_closed, 1);
	if (!bpf_map_delete_elem(&conns_spill, key))
		__sync_fetch_and_add(&conn_entries_closed, 1);
}

/* [NT_PRESSURE_AT]: from how many estimated entries the LRU may evict live
 * ones; [NT_PRESSURE_EVICTIONS_SEEN]: evicted entries user space has
 * found. Both written by the sensor. At or above that estimate a socket
 * closing without an entry is still reported (NT_CONN_CLOSE_UNTRACKED);
 * below it, not: each report costs a ring record, for every TCP socket of
 * the host that closes. */
#define NT_PRESSURE_AT 0
#define NT_PRESSURE_EVICTIONS_SEEN 1
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} conn_pressure SEC(".maps");

enum io_kind {
	IO_PLAIN = 1,   /* one user buffer */
	IO_IOV = 2,     /* an iovec array in user memory */
	IO_NONE = 3,    /* bytes move but are not in user memory (sendfile, splice) */
	IO_KIOV = 4,    /* an iovec array in kernel memory (the kernel's copy: kprobe path) */
};

/* One call's arguments: built at syscall exit, or remembered from kprobe entry to return. */
struct inflight {
	__u64 sk;
	__u64 buf;   /* IO_PLAIN: the buffer; IO_IOV, IO_KIOV: the iovec array */
	__u64 count; /* IO_IOV, IO_KIOV: number of iovecs */
	__u64 skip;  /* IO_IOV, IO_KIOV: bytes already consumed in the first iovec */
	__u32 fd;
	__u16 probe; /* enum nt_probe */
	__u8 kind;   /* enum io_kind */
	__u8 direction;
};

/* kprobe path only, per thread. A plain hash, not LRU: evicting a blocked
 * read would lose data silently; a full table is counted as
 * NT_DROP_INFLIGHT_FULL instead. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* 1 where the kernel has no kprobes */
	__uint(map_flags, BPF_F_NO_PREALLOC); /* see maps.bpf.h */
	__type(key, __u64); /* pid_tgid */
	__type(value, struct inflight);
} inflight SEC(".maps");

/* An SSL_read/SSL_write call in progress, per thread: its arguments, and
 * the socket its own syscalls touch while it runs. */
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* _ex variants: where the byte count is written */
	__u16 probe;   /* enum nt_probe */
	__u8 direction;
	__u8 active;   /* 0: no call in progress (the slot stays with the thread) */
	__u8 _pad[4];
};

/*
 * In the thread's own storage (task local storage), not a hash keyed by
 * thread: found through the task without hashing, and made once per thread
 * that calls a TLS library, where a hash entry was allocated at each call's
 * entry and freed at its return. The kernel frees it when the thread exits.
 * A call blocked in a read keeps its slot however long it waits, on
 * whichever CPU it wakes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ssl_call);
} ssl_calls SEC(".maps");

/* The TLS library call in progress on this thread, or NULL. */
static __always_inline struct ssl_call *current_ssl_call(void)
{
	struct ssl_call *c = bpf_task_storage_get(&ssl_calls, bpf_get_current_task_btf(), 0, 0);
	return c && c->active ? c : NULL;
}

/* A TLS library call starts on this thread (replacing one whose return was
 * never seen); false when the thread's slot could not be made. */
static __always_inline bool begin_ssl_call(const struct ssl_call *call)
{
	struct ssl_call *c = bpf_task_storage_get(&ssl_calls, bpf_get_current_task_btf(), 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!c)
		return false;
	*c = *call;
	c->active = 1;
	return true;
}

/* The SSL call this thread returns from, into `call`; it ends here. */
static __always_inline bool take_ssl_call(struct ssl_call *call)
{
	struct ssl_call *p = current_ssl_call();
	if (!p)
		return false;
	*call = *p;
	p->active = 0;
	return true;
}

/* SSL object → the socket its reads and writes go to, learned from the
 * syscalls made inside SSL calls (no OpenSSL struct layout needed). */
struct ssl_key {
	__u64 ssl; /* SSL *: an address in one process, so the tgid goes with it */
	__u32 tgid;
	__u32 _pad;
};

/* Where an SSL object's bytes go: its socket, and the open file its
 * descriptor named when a syscall inside one of its calls showed it (0 when
 * learned otherwise), so that later syscalls on the same file are known to be
 * this object's without the walk from descriptor to socket. */
struct ssl_binding {
	__u64 sk;   /* struct sock * */
	__u64 file; /* struct file *, or 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ssl_key);
	__type(value, struct ssl_binding);
} ssl_sockets SEC(".maps");

/* The reverse: which SSL object owns a socket. Lets a memory-BIO SSL object
 * adopt a socket only while no other one has it, and lets a socket's close
 * forget its SSL object (SSL* addresses are reused after free). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* struct sock * */
	__type(value, struct ssl_key);
} socket_ssl SEC(".maps");

/* Memory-BIO TLS (Node.js): the socket this thread last received TLS
 * ciphertext on outside any SSL call. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, __u64); /* struct sock * */
} thread_tls_recv SEC(".maps");

/* Open files whose socket carried TLS ciphertext outside any TLS library
 * call (Go's crypto/tls, probed on calls rather than around them; memory-BIO
 * event loops): the socket then, so that the next syscall on the file needs
 * no walk to its socket (tcp_syscalls.bpf.c, tls_file_counted). An entry is
 * only a hint, checked against the file's socket and its connection each
 * time: a stale one costs a look-up, never a wrong answer. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);   /* struct file * */
	__type(value, __u64); /* struct sock * */
} tls_files SEC(".maps");

/* BoringSSL behind a memory BIO pair (gRPC's C core, boringssl.bpf.c): the
 * first NT_BSSL_PREFIX bytes of ciphertext an SSL object wrote into its BIO
 * inside an SSL call, until a socket of the same process sends them. The
 * socket send may come on another thread, later: keyed by process and
 * bytes, not by thread. 16 bytes: a TLS record header and 11 bytes of
 * ciphertext (or of a hello's header and random), so two writes of one
 * process do not share a key but by chance. */
#define NT_BSSL_PREFIX 16

struct bssl_prefix {
	__u32 tgid;
	__u8 bytes[NT_BSSL_PREFIX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct bssl_prefix);
	__type(value, struct ssl_key);
} bssl_sent SEC(".maps");

/* Processes whose BoringSSL wrote records into its BIO (keys in bssl_sent):
 * only their sends are looked up there. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
} bssl_tgids SEC(".maps");

/* BoringSSL plaintext written before its SSL object's socket was known (a
 * connection whose handshake came before the probes), held until the
 * object's ciphertext binds it (the SSL_write calls of one gRPC flush come
 * before its send), emitted whole or counted whole. 8 KiB: the value,
 * twice that, must fit a per-CPU scratch entry (32 KiB at most). */
#define BSSL_HELD_MAX 8192

struct bssl_held {
	__u32 len;
	__u16 probe;
	__u8 spoiled; /* more than BSSL_HELD_MAX came: the rest until bound is counted */
	__u8 _pad;
	__u8 data[2 * BSSL_HELD_MAX]; /* twice: the verifier sees offset + length within */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* not LRU: an eviction would lose its count */
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ssl_key);
	__type(value, struct bssl_held);
} bssl_held SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bssl_held);
} bssl_held_init SEC(".maps");

/* [0] is 1 when TCP payload comes from the syscall tracepoints (a kernel
 * without kprobes). They are attached on every kernel, for DNS over UDP;
 * with kprobes they leave TCP to them. Set once the hook is chosen. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} syscall_tcp SEC(".maps");

/* Scratch record: built here, then copied to the ring buffer with its real length. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_data_event);
} data_scratch SEC(".maps");

/* --pid and --port; consulted only when CONFIG says the filter is on.
 * The sensor sizes them to the lists it is given. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} port_filter SEC(".maps");

/* Kubernetes mode: per-cgroup decisions (events.h), changed live by the
 * sensor; sized by it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct nt_cgroup_policy);
} cgroup_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_mode SEC(".maps");

#endif

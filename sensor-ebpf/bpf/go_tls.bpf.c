/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TLS plaintext from Go's crypto/tls (Go 1.18+, register ABI): a uprobe at
 * the entry of (*Conn).Write and (*Conn).Read saves the arguments per
 * goroutine; uprobes on their `ret` instructions (never uretprobes: Go moves
 * goroutine stacks) emit the bytes moved. On x86_64, where a probe on `ret`
 * is single-stepped, the sensor probes calls inside them instead when it
 * finds them (probes/go_tls.rs): Write's call of writeRecordLocked, which
 * has all it needs in one probe, and Read's copy out of the decrypted
 * record, which reads the connection from Read's stack (or, where that slot
 * was not found, takes the entry's). The socket is the fd inside the
 * tls.Conn's net.Conn, found through the task's file table once per
 * connection and then kept (go_socks). Found at a probe inside the call,
 * not at its entry, a connection's first lookup can come after another
 * goroutine closed it; its fd number reused at once by a new TCP socket
 * would lend that call's bytes to the new socket: a window of microseconds
 * on a connection's first call, which Write's probe has always had.
 */

#include "emit.bpf.h"

#if defined(__TARGET_ARCH_x86)
#define GO_ARG0(r) ((r)->ax)
#define GO_ARG1(r) ((r)->bx)
#define GO_ARG2(r) ((r)->cx)
#define GO_ARG3(r) ((r)->di)
#define GO_RET0(r) ((r)->ax)
#define GO_G(r) ((r)->r14)
#define GO_SP(r) ((r)->sp)
#elif defined(__TARGET_ARCH_arm64)
#define GO_ARG0(r) ((r)->regs[0])
#define GO_ARG1(r) ((r)->regs[1])
#define GO_ARG2(r) ((r)->regs[2])
#define GO_ARG3(r) ((r)->regs[3])
#define GO_RET0(r) ((r)->regs[0])
#define GO_G(r) ((r)->regs[28])
#define GO_SP(r) ((r)->sp)
#endif

#define GO_ITAB_HASH 16 /* itab{inter, _type *; hash uint32} */

/* Layouts by the attach cookie the sensor gives each probed executable's
 * probes: a probe is set on the file itself, so every process that runs
 * the file hits it, whichever container (overlayfs mount) it runs in. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nt_go_layout);
} go_layouts SEC(".maps");

struct go_key {
	__u64 g; /* the goroutine (runtime.g *) */
	__u32 tgid;
	__u32 _pad;
};

struct go_call {
	__u64 conn; /* *tls.Conn */
	__u64 buf;
	__u64 sk; /* struct sock * found at the entry; 0: look again at the return */
	__u16 probe;
	__u8 direction;
	__u8 no_sock; /* why `sk` is 0: GO_SOCK_* */
	__u8 _pad[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct go_key);
	__type(value, struct go_call);
} go_calls SEC(".maps");

/* The layout of the probed executable: its go_layouts entry, else the table. */
static __always_inline struct nt_go_layout go_layout_of(struct pt_regs *ctx)
{
	struct nt_go_layout table = {
		.conn_data = NT_GO_TABLE_CONN_DATA,
		.tcpconn_fd = NT_GO_TABLE_TCPCONN_FD,
		.netfd_sysfd = NT_GO_TABLE_NETFD_SYSFD,
	};
	__u64 cookie = bpf_get_attach_cookie(ctx);
	struct nt_go_layout *l = bpf_map_lookup_elem(&go_layouts, &cookie);
	return l ? *l : table;
}

/*
 * The socket each *tls.Conn talks through, so that its calls after the
 * first read one interface value instead of walking tls.Conn → net.Conn →
 * netFD → fd → file table (four more reads of user memory and a dozen of
 * the kernel's: ~1.5 µs a call on our machines). Keyed by the *tls.Conn and
 * the *net.TCPConn it holds; an entry holds only while the connection it
 * names is still tracked under the same id (its close removes that), so
 * objects the garbage collector reuses for a new connection look it up again.
 * An entry with conn_id 0 says the connection's ports were not wanted; it
 * serves only when the socket can no longer be found (the program closed the
 * connection while a call was in it, before its probe inside the call ran),
 * to leave that call's bytes out as the others were, not count them unknown.
 */
struct go_sock_key {
	__u64 conn;    /* *tls.Conn */
	__u64 netconn; /* the *net.TCPConn in its net.Conn */
	__u32 tgid;
	__u32 _pad;
};

struct go_sock {
	__u64 sk;
	__u64 conn_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096); /* preallocated: ~0.5 MiB */
	__type(key, struct go_sock_key);
	__type(value, struct go_sock);
} go_socks SEC(".maps");

#define GO_NOT_TCP (-2)

/* Why a call has no socket. */
#define GO_SOCK_UNREADABLE 0    /* not found (counted where its bytes are dropped) */
#define GO_SOCK_NOT_TCP 1       /* its net.Conn is not a *net.TCPConn */
#define GO_SOCK_GONE_UNWANTED 2 /* closed, and its ports were not wanted */

/* The fd of the *net.TCPConn `data` whose itab is `itab`; -1 when
 * unreadable, GO_NOT_TCP when the net.Conn is something else. */
static __always_inline long go_tcpconn_fd(const struct nt_go_layout *l, __u64 itab, __u64 data)
{
	__u64 netfd = 0;
	__u32 hash = 0;
	long fd = -1;
	if (bpf_probe_read_user(&hash, sizeof(hash), (void *)(itab + GO_ITAB_HASH)))
		return -1;
	if (l->itab_hash ? hash != l->itab_hash
			 : hash != NT_GO_TCPCONN_HASH_MD5 && hash != NT_GO_TCPCONN_HASH_NOTSHA256 &&
				   hash != NT_GO_TCPCONN_HASH_SHA256X)
		return GO_NOT_TCP;
	if (!data)
		return -1;
	if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(data + l->tcpconn_fd)) || !netfd)
		return -1;
	if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(netfd + l->netfd_sysfd)))
		return -1;
	return fd;
}

/* The socket of a *tls.Conn, or NULL with *no_sock saying why. */
static __always_inline struct sock *go_conn_sock(const struct nt_go_layout *l, __u64 conn, __u8 *no_sock)
{
	*no_sock = GO_SOCK_UNREADABLE;
	struct {
		__u64 itab;
		__u64 data;
	} iface = {};
	if (bpf_probe_read_user(&iface, sizeof(iface), (void *)(conn + l->conn_data - 8)) || !iface.itab)
		return NULL;
	struct go_sock_key key = { .conn = conn, .netconn = iface.data, .tgid = bpf_get_current_pid_tgid() >> 32 };
	struct go_sock *known = bpf_map_lookup_elem(&go_socks, &key);
	if (known && known->conn_id) {
		__u64 sk = known->sk;
		struct conn_state *cs = conn_lookup(&sk);
		if (cs && cs->conn_id == known->conn_id)
			return (struct sock *)sk;
	}
	long fd = go_tcpconn_fd(l, iface.itab, iface.data);
	struct sock *sk = fd >= 0 ? tcp_sock_of_fd(fd) : NULL;
	if (!sk) {
		if (fd == GO_NOT_TCP)
			*no_sock = GO_SOCK_NOT_TCP;
		else if (known && !known->conn_id)
			*no_sock = GO_SOCK_GONE_UNWANTED;
		return NULL;
	}
	__u64 skey = (__u64)sk;
	struct conn_state *cs = conn_lookup(&skey);
	if (cs || !ports_wanted(sk)) {
		struct go_sock v = { .sk = skey, .conn_id = cs ? cs->conn_id : 0 };
		bpf_map_update_elem(&go_socks, &key, &v, BPF_ANY);
	}
	return sk;
}

/* A call on *tls.Conn `conn` moving bytes at `buf`, with its socket;
 * false when the socket's ports are not wanted. */
static __always_inline bool go_call_of(const struct nt_go_layout *l, __u64 conn, __u64 buf, __u16 probe,
				       __u8 direction, struct go_call *call)
{
	*call = (struct go_call){ .conn = conn, .buf = buf, .probe = probe, .direction = direction };
	struct sock *sk = go_conn_sock(l, conn, &call->no_sock);
	call->sk = (__u64)sk;
	return sk ? ports_wanted(sk) : call->no_sock != GO_SOCK_GONE_UNWANTED;
}

/* A call starts: its arguments and socket, kept for its return unless the
 * socket's ports are not wanted. */
static __always_inline int go_enter(struct pt_regs *ctx, __u16 probe, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct go_key key = { .g = GO_G(ctx), .tgid = id >> 32 };
	struct go_call call;
	struct nt_go_layout l = go_layout_of(ctx);
	if (!go_call_of(&l, GO_ARG0(ctx), GO_ARG1(ctx), probe, direction, &call)) {
		/* Not kept; nor may an older call of this goroutine whose return
		 * was never seen take this call's return. */
		bpf_map_delete_elem(&go_calls, &key);
		return 0;
	}
	bpf_map_update_elem(&go_calls, &key, &call, BPF_ANY);
	return 0;
}

NT_UPROBE(up_go_tls_write)
{
	return go_enter(ctx, NT_PROBE_UPROBE_GO_TLS_WRITE, NT_DIR_SEND);
}

NT_UPROBE(up_go_tls_read)
{
	return go_enter(ctx, NT_PROBE_UPROBE_GO_TLS_READ, NT_DIR_RECV);
}

/* The bytes of a call that moved `n` from `buf`, on the socket its entry
 * found (or found now). */
static __always_inline int go_emit(struct pt_regs *ctx, struct go_call call, __u64 buf, long n, __u64 id)
{
	if (n <= 0)
		return 0;
	struct sock *sk = (struct sock *)call.sk;
	if (!sk && call.no_sock == GO_SOCK_UNREADABLE) {
		/* The entry could not read the socket: try again now. */
		struct nt_go_layout l = go_layout_of(ctx);
		sk = go_conn_sock(&l, call.conn, &call.no_sock);
		if (sk ? !ports_wanted(sk) : call.no_sock == GO_SOCK_GONE_UNWANTED)
			return 0;
	}
	if (call.no_sock == GO_SOCK_NOT_TCP) {
		count_drop(NT_DROP_GO_CONN_NOT_TCP, n);
		return 0;
	}
	return emit_tls_plaintext((__u64)sk, buf, n, call.probe, call.direction, id);
}

/* This goroutine's call, taken out of the table. */
static __always_inline bool go_take_call(struct pt_regs *ctx, __u64 id, struct go_call *call)
{
	struct go_key key = { .g = GO_G(ctx), .tgid = id >> 32 };
	struct go_call *p = bpf_map_lookup_elem(&go_calls, &key);
	if (!p)
		return false;
	*call = *p;
	bpf_map_delete_elem(&go_calls, &key);
	return true;
}

/* On every `ret` of both functions: the call of this goroutine ends. */
NT_UPROBE(up_go_tls_ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_call call;
	if (!go_take_call(ctx, id, &call))
		return 0;
	return go_emit(ctx, call, call.buf, (long)GO_RET0(ctx), id);
}

#define GO_RECORD_TYPE_APPLICATION_DATA 23

/* On (*Conn).Write's call of c.writeRecordLocked(recordTypeApplicationData,
 * b): connection and bytes are its arguments, nothing is kept for later. */
NT_UPROBE(up_go_tls_write_record)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32) || (__u8)GO_ARG1(ctx) != GO_RECORD_TYPE_APPLICATION_DATA)
		return 0;
	struct go_call call;
	struct nt_go_layout l = go_layout_of(ctx);
	if (!go_call_of(&l, GO_ARG0(ctx), GO_ARG2(ctx), NT_PROBE_UPROBE_GO_TLS_WRITE_RECORD, NT_DIR_SEND,
			&call))
		return 0;
	return go_emit(ctx, call, call.buf, (long)GO_ARG3(ctx), id);
}

/* On (*Conn).Read's call of runtime.memmove(b, unread, n), the inlined
 * bytes.(*Reader).Read of the decrypted record: the n bytes Read returns,
 * read from where they are copied from. The connection is Read's receiver,
 * read from the stack slot Read keeps it in where the sensor found one
 * (probes/go_tls.rs), else kept for this probe by the entry probe. */
NT_UPROBE(up_go_tls_read_copy)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_call call;
	struct nt_go_layout l = go_layout_of(ctx);
	if (l.read_conn_sp) {
		if (!pid_wanted(id >> 32))
			return 0;
		/* Unreadable: the connection's socket is then unknown, and that
		 * is counted where the bytes are dropped. */
		__u64 conn = 0;
		bpf_probe_read_user(&conn, sizeof(conn), (void *)(GO_SP(ctx) + l.read_conn_sp));
		if (!go_call_of(&l, conn, 0, NT_PROBE_UPROBE_GO_TLS_READ_COPY, NT_DIR_RECV, &call))
			return 0;
	} else if (!go_take_call(ctx, id, &call)) {
		return 0;
	}
	call.probe = NT_PROBE_UPROBE_GO_TLS_READ_COPY;
	return go_emit(ctx, call, GO_ARG1(ctx), (long)GO_ARG2(ctx), id);
}

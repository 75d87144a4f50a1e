/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Plaintext TCP from syscall tracepoints, for kernels without kprobes.
 *
 * Exit only: the arguments come from the task's saved user registers
 * (unchanged by the kernel), so one program run per call, nothing to
 * remember between entry and exit, failed calls cost almost nothing, and a
 * call already blocked when the sensor attaches is still captured when it
 * returns.
 */

#include "dns.bpf.h"

#ifndef NT_MSG_PEEK
#define NT_MSG_PEEK 2
#endif

static __always_inline struct pt_regs *syscall_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/*
 * Whether the SSL object of TLS library call `call` (of process `tgid`) is
 * bound to open file `file` and to the socket that file has now: then a
 * syscall on that file inside the call is the object's, nothing left to
 * learn from it. The socket is read again from the file (two reads), so a
 * binding left by a closed connection, whose file and socket memory went to
 * others since, never passes.
 */
static __always_inline struct ssl_binding *call_bound_to(const struct ssl_call *call, __u32 tgid, __u64 file)
{
	struct ssl_key key = { .ssl = call->ssl, .tgid = tgid };
	struct ssl_binding *b = bpf_map_lookup_elem(&ssl_sockets, &key);
	return b && file && b->file == file && sock_of_socket_file(file) == b->sk ? b : NULL;
}

/*
 * A call that moved nothing (would block, end of stream) inside a TLS
 * library's ciphertext window still names the window's socket, as the
 * kprobes do at entry: rustls's deframer read that finds nothing binds its
 * buffer like one that read bytes (rustls_held.bpf.h needs it to release a
 * request held since the handshake before its answer). Only inside a
 * window, so failed calls elsewhere stay cheap, and only while the window's
 * object is not bound to this file and its socket yet. For the calls whose
 * first argument is the descriptor.
 */
static __always_inline int bind_idle_window(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call *call = current_ssl_call();
	if (!call || !pid_wanted(id >> 32))
		return 0;
	__u64 file = file_of_fd(PT_REGS_PARM1_CORE_SYSCALL(syscall_regs()));
	if (call_bound_to(call, id >> 32, file))
		return 0;
	__u8 proto = 0;
	struct sock *sk = inet_sock_of_file(file, &proto);
	if (sk && proto != NT_IPPROTO_UDP)
		learn_ssl_socket(sk, id >> 32, file);
	return 0;
}

/* Whether this path carries TCP: with kprobes only sendfile and splice,
 * whose pages they never see. */
static __always_inline bool syscalls_carry_tcp(__u8 kind)
{
	__u32 zero = 0;
	__u32 *tcp_here = bpf_map_lookup_elem(&syscall_tcp, &zero);
	return (tcp_here && *tcp_here) || kind == IO_NONE;
}

/*
 * A syscall on `fd` inside a TLS library call whose SSL object is bound to
 * that descriptor's open file and its socket (every call of a connection
 * after its first): the bytes are that connection's ciphertext, never
 * written. Counted in the socket's offsets and nothing more: no checks of
 * the file's kind, no filters (the call's entry applied them, and nothing
 * is written), no TLS checks; what the full path below ends with for a
 * tracked connection. Not for a BoringSSL process's sends, whose bytes may
 * bind another object (bssl_bind_sent).
 */
static __always_inline bool tls_bytes_counted(const struct ssl_call *call, __u64 id, __u32 fd, long ret,
					      __u8 direction)
{
	struct ssl_binding *b = call_bound_to(call, id >> 32, file_of_fd(fd));
	if (!b || (direction == NT_DIR_SEND && bssl_process(id >> 32)))
		return false;
	__u64 sk = b->sk;
	struct conn_state *cs = conn_lookup(&sk);
	if (!cs)
		return false; /* not tracked yet: the full path makes its entry */
	cs->tls = 1;
	__sync_fetch_and_add(direction == NT_DIR_SEND ? &cs->send_seq : &cs->recv_seq, (__u64)ret);
	return true;
}

/*
 * The same outside TLS library calls: a syscall on open file `file`, known
 * (tls_files) to be a socket whose connection is TLS, is that connection's
 * ciphertext when the file still has that socket and the connection is still
 * TLS, both read again now; what the full path below ends with, the
 * memory-BIO note on reads included. Not for a BoringSSL process's sends.
 */
static __always_inline bool tls_file_counted(__u64 id, __u64 file, long ret, __u8 direction)
{
	__u64 *known = file ? bpf_map_lookup_elem(&tls_files, &file) : NULL;
	if (!known)
		return false;
	__u64 sk = *known;
	if (sock_of_socket_file(file) != sk || (direction == NT_DIR_SEND && bssl_process(id >> 32)))
		return false;
	struct conn_state *cs = conn_lookup(&sk);
	if (!cs || !cs->tls)
		return false;
	__sync_fetch_and_add(direction == NT_DIR_SEND ? &cs->send_seq : &cs->recv_seq, (__u64)ret);
	if (direction == NT_DIR_RECV)
		note_tls_recv_outside_call(id, sk);
	return true;
}

/*
 * Emit what a finished call moved: `ret` bytes on `fd`, found at buf (or
 * iovecs). On a UDP socket it is a datagram (to or from the user sockaddr at
 * `peer`, when given), kept only when it is DNS.
 */
static __always_inline int io_done(long ret, __u32 fd, __u64 buf, __u64 count, __u8 kind,
				   __u16 probe, __u8 direction, __u64 peer)
{
	if (ret <= 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	bool carry_tcp = syscalls_carry_tcp(kind);
	struct ssl_call *call = carry_tcp ? current_ssl_call() : NULL;
	if (call && tls_bytes_counted(call, id, fd, ret, direction))
		return 0;
	if (!pid_wanted(id >> 32))
		return 0;
	__u64 file = file_of_fd(fd);
	if (carry_tcp && !call && tls_file_counted(id, file, ret, direction))
		return 0;
	__u8 proto = 0;
	struct sock *sk = inet_sock_of_file(file, &proto);
	if (!sk)
		return 0;
	if (proto == NT_IPPROTO_UDP) {
		__u64 len = ret;
		__u64 data = kind == IO_IOV ? first_iov(buf, count, &len) : buf;
		if (data && kind != IO_NONE)
			dns_emit(sk, peer, data, len, probe, direction, id >> 32, (__u32)id);
		return 0;
	}
	if (!carry_tcp)
		return kp_missed_return(id, ret, sk, buf, count, kind);
	learn_ssl_socket(sk, id >> 32, file);
	/* BoringSSL's ciphertext binds its object before the port filter (an
	 * unwanted port is bound too, so not counted unbound), and after the
	 * call's own bytes are counted: plaintext held for the object is
	 * written then, on a connection whose offsets include this call. */
	bool bssl_send = direction == NT_DIR_SEND && kind != IO_NONE;
	struct inflight sent = { .sk = (__u64)sk, .buf = buf, .count = count, .kind = kind };
	if (!ports_wanted(sk)) {
		if (bssl_send)
			bssl_bind_sent(&sent, ret, id >> 32);
		return 0;
	}
	struct inflight io = {
		.sk = (__u64)sk,
		.buf = buf,
		.count = count,
		.fd = fd,
		.probe = probe,
		.kind = kind,
		.direction = direction,
	};
	bool ciphertext = emit_call(&io, ret, id >> 32, (__u32)id, false);
	if (ciphertext && !call) {
		__u64 known = (__u64)sk;
		bpf_map_update_elem(&tls_files, &file, &known, BPF_ANY);
	}
	if (bssl_send)
		bssl_bind_sent(&sent, ret, id >> 32);
	return 0;
}

/* write/read(fd, buf, count), sendto/recvfrom(fd, buf, len, flags, …) */
static __always_inline int plain_done(long ret, __u16 probe, __u8 direction, bool has_flags)
{
	if (ret <= 0)
		return bind_idle_window();
	struct pt_regs *regs = syscall_regs();
	if (has_flags && direction == NT_DIR_RECV && (PT_REGS_PARM4_CORE_SYSCALL(regs) & NT_MSG_PEEK))
		return 0; /* peeked bytes stay queued and are read again */
	/* sendto's destination and recvfrom's source address, for datagrams */
	__u64 peer = has_flags ? PT_REGS_PARM5_CORE_SYSCALL(regs) : 0;
	return io_done(ret, PT_REGS_PARM1_CORE_SYSCALL(regs), PT_REGS_PARM2_CORE_SYSCALL(regs), 0,
		       IO_PLAIN, probe, direction, peer);
}

/* writev/readv(fd, iov, iovcnt) */
static __always_inline int iov_done(long ret, __u16 probe, __u8 direction)
{
	if (ret <= 0)
		return bind_idle_window();
	struct pt_regs *regs = syscall_regs();
	return io_done(ret, PT_REGS_PARM1_CORE_SYSCALL(regs), PT_REGS_PARM2_CORE_SYSCALL(regs),
		       PT_REGS_PARM3_CORE_SYSCALL(regs), IO_IOV, probe, direction, 0);
}

/* sendmsg/recvmsg(fd, msg, flags): the iovecs are behind the user's msghdr. */
static __always_inline int msg_done(long ret, __u16 probe, __u8 direction)
{
	if (ret <= 0)
		return bind_idle_window();
	struct pt_regs *regs = syscall_regs();
	if (direction == NT_DIR_RECV && (PT_REGS_PARM3_CORE_SYSCALL(regs) & NT_MSG_PEEK))
		return 0;
	struct user_msghdr m = {};
	if (bpf_probe_read_user(&m, sizeof(m), (void *)PT_REGS_PARM2_CORE_SYSCALL(regs)))
		return 0;
	return io_done(ret, PT_REGS_PARM1_CORE_SYSCALL(regs), (__u64)m.msg_iov, m.msg_iovlen, IO_IOV,
		       probe, direction, (__u64)m.msg_name);
}

SEC("tracepoint/syscalls/sys_exit_write")
int tp_exit_write(struct trace_event_raw_sys_exit *ctx)
{
	return plain_done(ctx->ret, NT_PROBE_SYS_WRITE, NT_DIR_SEND, false);
}

SEC("tracepoint/syscalls/sys_exit_read")
int tp_exit_read(struct trace_event_raw_sys_exit *ctx)
{
	return plain_done(ctx->ret, NT_PROBE_SYS_READ, NT_DIR_RECV, false);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int tp_exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	return plain_done(ctx->ret, NT_PROBE_SYS_SENDTO, NT_DIR_SEND, true);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int tp_exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return plain_done(ctx->ret, NT_PROBE_SYS_RECVFROM, NT_DIR_RECV, true);
}

SEC("tracepoint/syscalls/sys_exit_writev")
int tp_exit_writev(struct trace_event_raw_sys_exit *ctx)
{
	return iov_done(ctx->ret, NT_PROBE_SYS_WRITEV, NT_DIR_SEND);
}

SEC("tracepoint/syscalls/sys_exit_readv")
int tp_exit_readv(struct trace_event_raw_sys_exit *ctx)
{
	return iov_done(ctx->ret, NT_PROBE_SYS_READV, NT_DIR_RECV);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int tp_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	return msg_done(ctx->ret, NT_PROBE_SYS_SENDMSG, NT_DIR_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int tp_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return msg_done(ctx->ret, NT_PROBE_SYS_RECVMSG, NT_DIR_RECV);
}

/* sendfile and splice move page-cache or pipe pages: the count is known, the bytes are not. */
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int tp_exit_sendfile64(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret <= 0)
		return 0;
	struct pt_regs *regs = syscall_regs();
	return io_done(ctx->ret, PT_REGS_PARM1_CORE_SYSCALL(regs), 0, 0, IO_NONE, NT_PROBE_SYS_SENDFILE,
		       NT_DIR_SEND, 0);
}

/* splice(fd_in, off_in, fd_out, off_out, len, flags) */
SEC("tracepoint/syscalls/sys_exit_splice")
int tp_exit_splice(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret <= 0)
		return 0;
	struct pt_regs *regs = syscall_regs();
	__u32 fd_out = PT_REGS_PARM3_CORE_SYSCALL(regs);
	if (tcp_sock_of_fd(fd_out))
		return io_done(ctx->ret, fd_out, 0, 0, IO_NONE, NT_PROBE_SYS_SPLICE, NT_DIR_SEND, 0);
	return io_done(ctx->ret, PT_REGS_PARM1_CORE_SYSCALL(regs), 0, 0, IO_NONE, NT_PROBE_SYS_SPLICE,
		       NT_DIR_RECV, 0);
}

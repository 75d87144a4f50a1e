/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Plaintext TCP from syscall tracepoints, for kernels without kprobes.
 * Entry remembers the arguments if the fd is a TCP socket we want; exit
 * emits what the call actually moved (its return value), read from the
 * caller's buffers.
 */
#ifndef NETTAP_TCP_SYSCALLS_BPF_H
#define NETTAP_TCP_SYSCALLS_BPF_H

#include "emit.bpf.h"

#define NT_MSG_PEEK 2

static __always_inline int io_enter(__u32 fd, __u64 buf, __u64 count, __u8 kind, __u16 probe,
				    __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct sock *sk = tcp_sock_of_fd(fd);
	if (!sk || !ports_wanted(sk))
		return 0;
	struct inflight io = {
		.sk = (__u64)sk,
		.buf = buf,
		.count = count,
		.fd = fd,
		.probe = probe,
		.kind = kind,
		.direction = direction,
	};
	if (bpf_map_update_elem(&inflight, &id, &io, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

/* sendmsg/recvmsg: the iovecs are behind the user's msghdr. */
static __always_inline int msg_enter(__u32 fd, __u64 umsg, __u16 probe, __u8 direction)
{
	struct user_msghdr m = {};
	if (bpf_probe_read_user(&m, sizeof(m), (void *)umsg))
		return 0;
	return io_enter(fd, (__u64)m.msg_iov, m.msg_iovlen, IO_IOV, probe, direction);
}

static __always_inline int io_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &id);
	if (!p)
		return 0;
	struct inflight io = *p;
	bpf_map_delete_elem(&inflight, &id);
	if (ret <= 0 || io.kind == IO_CONNECT)
		return 0;
	emit_call(&io, ret, id >> 32, (__u32)id);
	return 0;
}

#define NT_EXIT(name)                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #name)                         \
	int tp_exit_##name(struct trace_event_raw_sys_exit *ctx)           \
	{                                                                  \
		return io_exit(ctx->ret);                                  \
	}

SEC("tracepoint/syscalls/sys_enter_write")
int tp_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return io_enter(ctx->args[0], ctx->args[1], 0, IO_PLAIN, NT_PROBE_SYS_WRITE, NT_DIR_SEND);
}
NT_EXIT(write)

SEC("tracepoint/syscalls/sys_enter_read")
int tp_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return io_enter(ctx->args[0], ctx->args[1], 0, IO_PLAIN, NT_PROBE_SYS_READ, NT_DIR_RECV);
}
NT_EXIT(read)

SEC("tracepoint/syscalls/sys_enter_writev")
int tp_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return io_enter(ctx->args[0], ctx->args[1], ctx->args[2], IO_IOV, NT_PROBE_SYS_WRITEV,
			NT_DIR_SEND);
}
NT_EXIT(writev)

SEC("tracepoint/syscalls/sys_enter_readv")
int tp_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return io_enter(ctx->args[0], ctx->args[1], ctx->args[2], IO_IOV, NT_PROBE_SYS_READV,
			NT_DIR_RECV);
}
NT_EXIT(readv)

SEC("tracepoint/syscalls/sys_enter_sendto")
int tp_enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return io_enter(ctx->args[0], ctx->args[1], 0, IO_PLAIN, NT_PROBE_SYS_SENDTO, NT_DIR_SEND);
}
NT_EXIT(sendto)

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int tp_enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[3] & NT_MSG_PEEK) /* the bytes stay queued and will be read again */
		return 0;
	return io_enter(ctx->args[0], ctx->args[1], 0, IO_PLAIN, NT_PROBE_SYS_RECVFROM, NT_DIR_RECV);
}
NT_EXIT(recvfrom)

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int tp_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return msg_enter(ctx->args[0], ctx->args[1], NT_PROBE_SYS_SENDMSG, NT_DIR_SEND);
}
NT_EXIT(sendmsg)

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int tp_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[2] & NT_MSG_PEEK)
		return 0;
	return msg_enter(ctx->args[0], ctx->args[1], NT_PROBE_SYS_RECVMSG, NT_DIR_RECV);
}
NT_EXIT(recvmsg)

/* sendfile and splice move page-cache or pipe pages: the count is known, the bytes are not. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int tp_enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return io_enter(ctx->args[0], 0, 0, IO_NONE, NT_PROBE_SYS_SENDFILE, NT_DIR_SEND);
}
NT_EXIT(sendfile64)

SEC("tracepoint/syscalls/sys_enter_splice")
int tp_enter_splice(struct trace_event_raw_sys_enter *ctx)
{
	__u32 fd_in = ctx->args[0], fd_out = ctx->args[2];
	if (tcp_sock_of_fd(fd_out))
		return io_enter(fd_out, 0, 0, IO_NONE, NT_PROBE_SYS_SPLICE, NT_DIR_SEND);
	return io_enter(fd_in, 0, 0, IO_NONE, NT_PROBE_SYS_SPLICE, NT_DIR_RECV);
}
NT_EXIT(splice)

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Plaintext TCP from kprobes on tcp_sendmsg/tcp_recvmsg: the documented
 * method, used where the kernel has kprobes. Entry remembers where the
 * user's bytes are (from the msghdr's iov_iter); return emits what moved.
 */

#include "emit.bpf.h"
#include "core_fixes.bpf.h"

/*
 * Fill io with the user memory described by msg->msg_iter; false for kernel
 * memory. An ITER_IOVEC's iovec array is the kernel's copy (on the syscall's
 * stack, or allocated for it): one iovec is resolved here to its user
 * buffer, more are walked in kernel memory at return (IO_KIOV).
 */
static __always_inline bool iter_to_io(struct msghdr *msg, struct inflight *io)
{
	void *it = &msg->msg_iter;
	struct iov_iter___v64 *n = it;
	struct iov_iter___v514 *o = it;
	__u8 type = BPF_CORE_READ(n, iter_type);
	io->skip = BPF_CORE_READ(n, iov_offset);

	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
		if (!bpf_core_field_exists(n->ubuf))
			return false;
		io->kind = IO_PLAIN;
		io->buf = (__u64)BPF_CORE_READ(n, ubuf) + io->skip;
		return true;
	}
	if (type != bpf_core_enum_value(enum iter_type, ITER_IOVEC))
		return false; /* kvec/bvec: in-kernel senders (kTLS, NFS, splice pages) */
	io->kind = IO_KIOV;
	if (bpf_core_field_exists(n->__iov)) {
		io->buf = (__u64)BPF_CORE_READ(n, __iov);
		io->count = BPF_CORE_READ(n, nr_segs);
	} else {
		io->buf = (__u64)BPF_CORE_READ(o, iov);
		io->count = BPF_CORE_READ(o, nr_segs);
	}
	if (io->count == 1) {
		struct iovec v = {};
		if (bpf_probe_read_kernel(&v, sizeof(v), (void *)io->buf))
			return false;
		io->kind = IO_PLAIN;
		io->buf = (__u64)v.iov_base + io->skip;
	}
	return true;
}

static __always_inline int kp_enter(struct sock *sk, struct msghdr *msg, __u16 probe, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	learn_ssl_socket(sk, id >> 32, 0);
	/* The bytes to send are in place at entry; how many will go is not
	 * known yet, so the first 16 are read as they are. */
	if (direction == NT_DIR_SEND && bssl_process(id >> 32)) {
		struct inflight sent = { .sk = (__u64)sk };
		if (iter_to_io(msg, &sent))
			bssl_bind_sent(&sent, NT_BSSL_PREFIX, id >> 32);
	}
	if (!ports_wanted(sk))
		return 0;
	struct inflight io = { .sk = (__u64)sk, .probe = probe, .direction = direction };
	/*
	 * Kernel memory (kvec/bvec) is an in-kernel sender's (kTLS, NFS) or, from
	 * 6.5, sendfile/splice pages: those two are counted by their syscall
	 * tracepoints on both paths, so nothing is remembered here.
	 */
	if (!iter_to_io(msg, &io))
		return 0;
	if (bpf_map_update_elem(&inflight, &id, &io, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

/* The call of thread `id` entered above returned `ret`: emit what moved. */
static __always_inline int kp_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &id);
	if (!p)
		return 0;
	struct inflight io = *p;
	bpf_map_delete_elem(&inflight, &id);
	if (ret > 0)
		emit_call(&io, ret, id >> 32, (__u32)id, false);
	return 0;
}

/*
 * At the exit of a syscall on socket `sk` that moved `ret` bytes through the
 * user memory `buf`/`count`/`kind` (as the tracepoint path reads it): the
 * return of a tcp_sendmsg/tcp_recvmsg whose kretprobe did not run. The kernel
 * gives a kretprobe only max(10, 2 x CPUs) instances, so with more calls
 * blocked at once (thread-per-connection servers) the rest return unseen.
 * The kernel's iovec copy may be gone by now: the syscall's own arguments
 * say where the bytes are.
 */
static __always_inline int kp_missed_return(__u64 id, long ret, struct sock *sk, __u64 buf, __u64 count,
					    __u8 kind)
{
	struct inflight *p = bpf_map_lookup_elem(&inflight, &id);
	if (!p || p->sk != (__u64)sk)
		return 0;
	struct inflight io = *p;
	bpf_map_delete_elem(&inflight, &id);
	io.buf = buf;
	io.count = count;
	io.skip = 0;
	io.kind = kind;
	emit_call(&io, ret, id >> 32, (__u32)id, false);
	return 0;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kp_tcp_sendmsg, struct sock *sk, struct msghdr *msg)
{
	return kp_enter(sk, msg, NT_PROBE_KPROBE_TCP_SENDMSG, NT_DIR_SEND);
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(kr_tcp_sendmsg, int ret)
{
	return kp_exit(ret);
}

#ifndef NT_MSG_PEEK
#define NT_MSG_PEEK 2
#endif

/*
 * Which argument of tcp_recvmsg holds the flags: the 4th since Linux 5.19
 * ("net: remove noblock parameter from recvmsg() entities"), the 5th before.
 * The sensor sets it from the kernel release before loading.
 */
const volatile __u32 recv_flags_arg = 4;

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(kp_tcp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, long arg4, long arg5)
{
	long flags = recv_flags_arg == 5 ? arg5 : arg4;
	if (flags & NT_MSG_PEEK)
		return 0; /* peeked bytes stay queued and are read again */
	return kp_enter(sk, msg, NT_PROBE_KPROBE_TCP_RECVMSG, NT_DIR_RECV);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(kr_tcp_recvmsg, int ret)
{
	return kp_exit(ret);
}

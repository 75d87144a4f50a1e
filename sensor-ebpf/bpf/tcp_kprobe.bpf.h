/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Plaintext TCP from kprobes on tcp_sendmsg/tcp_recvmsg: the documented
 * method, used where the kernel has kprobes. Entry remembers where the
 * user's bytes are (from the msghdr's iov_iter); return emits what moved.
 */
#ifndef NETTAP_TCP_KPROBE_BPF_H
#define NETTAP_TCP_KPROBE_BPF_H

#include "emit.bpf.h"

/* iov_iter changed shape over time; these flavors let CO-RE pick the one this kernel has. */
struct iov_iter___v64 { /* 6.4+: __iov, ubuf in an anonymous union */
	__u8 iter_type;
	size_t iov_offset;
	const struct iovec *__iov;
	void *ubuf;
	unsigned long nr_segs;
} __attribute__((preserve_access_index));

struct iov_iter___v514 { /* 5.14 to 6.3: iov */
	__u8 iter_type;
	size_t iov_offset;
	const struct iovec *iov;
	unsigned long nr_segs;
} __attribute__((preserve_access_index));

/* Fill io with the user memory described by msg->msg_iter; false for kernel memory. */
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
	io->kind = IO_IOV;
	if (bpf_core_field_exists(n->__iov)) {
		io->buf = (__u64)BPF_CORE_READ(n, __iov);
		io->count = BPF_CORE_READ(n, nr_segs);
	} else {
		io->buf = (__u64)BPF_CORE_READ(o, iov);
		io->count = BPF_CORE_READ(o, nr_segs);
	}
	return true;
}

static __always_inline int kp_enter(struct sock *sk, struct msghdr *msg, __u16 probe, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	learn_ssl_socket(sk, id >> 32);
	if (!ports_wanted(sk))
		return 0;
	struct inflight io = { .sk = (__u64)sk, .probe = probe, .direction = direction };
	if (!iter_to_io(msg, &io))
		io.kind = IO_NONE;
	if (bpf_map_update_elem(&inflight, &id, &io, BPF_ANY))
		count_drop(NT_DROP_INFLIGHT_FULL, 0);
	return 0;
}

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

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(kp_tcp_recvmsg, struct sock *sk, struct msghdr *msg)
{
	return kp_enter(sk, msg, NT_PROBE_KPROBE_TCP_RECVMSG, NT_DIR_RECV);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(kr_tcp_recvmsg, int ret)
{
	return kp_exit(ret);
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS over UDP: datagrams to or from port 53, and nothing else of UDP, as
 * NT_EV_DNS records (the data event layout, one message each). The sensor
 * parses them to name the peers of TCP connections. Called from the same
 * syscall exits as TCP (tcp_syscalls.bpf.c), plus sendmmsg/recvmmsg, which
 * glibc uses to ask for A and AAAA at once.
 */
#ifndef NETTAP_DNS_BPF_H
#define NETTAP_DNS_BPF_H

#include "emit.bpf.h"

#define NT_DNS_PORT 53
/* Messages looked at per sendmmsg/recvmmsg call (glibc sends 2). */
#define NT_MMSG_MAX 4

/* The peer of a datagram from a user sockaddr (sendto's destination,
 * recvfrom's source, msg_name); false when there is none to read. */
static __always_inline bool user_peer(__u64 uaddr, struct nt_conn_ident *id)
{
	if (!uaddr)
		return false;
	struct sockaddr_in6 sa = {};
	if (bpf_probe_read_user(&sa, sizeof(sa), (void *)uaddr))
		return false;
	if (sa.sin6_family == NT_AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&sa;
		ipv4_mapped(id->raddr, in->sin_addr.s_addr);
		id->rport = bpf_ntohs(in->sin_port);
		return true;
	}
	if (sa.sin6_family == NT_AF_INET6) {
		__builtin_memcpy(id->raddr, &sa.sin6_addr, 16);
		id->rport = bpf_ntohs(sa.sin6_port);
		return true;
	}
	return false;
}

/* One datagram of `len` bytes at user address `data` on UDP socket `sk`. */
static __always_inline void dns_emit(struct sock *sk, __u64 peer, __u64 data, __u64 len, __u16 probe,
				     __u8 direction, __u32 pid, __u32 tid)
{
	__u32 zero = 0;
	struct nt_data_event *ev = bpf_map_lookup_elem(&data_scratch, &zero);
	if (!ev)
		return;
	__builtin_memset(&ev->hdr, 0, sizeof(ev->hdr));
	read_endpoints(sk, &ev->hdr.conn);
	user_peer(peer, &ev->hdr.conn); /* unconnected sockets: the datagram's own peer */
	if (ev->hdr.conn.lport != NT_DNS_PORT && ev->hdr.conn.rport != NT_DNS_PORT)
		return;
	ev->hdr.kind = NT_EV_DNS;
	ev->hdr.probe = probe;
	ev->hdr.ts_ns = bpf_ktime_get_boot_ns();
	ev->hdr.pid = pid;
	ev->hdr.tid = tid;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&ev->hdr.comm, task, group_leader, comm);
	ev->hdr.cgroup = bpf_get_current_cgroup_id();
	ev->seq = 0;
	ev->direction = direction;
	__u64 n = len < NT_DNS_MAX ? len : NT_DNS_MAX;
	ev->len = n;
	ev->truncated = len - n;
	n &= 2 * NT_DNS_MAX - 1; /* a bound the verifier sees; n <= NT_DNS_MAX already */
	if (n == 0 || bpf_probe_read_user(ev->payload, n, (void *)data)) {
		count_drop(NT_DROP_READ_FAULT, len);
		return;
	}
	if (bpf_ringbuf_output(&events, ev, offsetof(struct nt_data_event, payload) + n, quiet_wakeup(ev->hdr.ts_ns)))
		count_drop(NT_DROP_RINGBUF_FULL_DATA, len);
}

/* The bytes of the first iovec of `count` at `iov` (a datagram's message). */
static __always_inline __u64 first_iov(__u64 iov, __u64 count, __u64 *len)
{
	struct iovec v = {};
	if (!count || bpf_probe_read_user(&v, sizeof(v), (void *)iov))
		return 0;
	if (*len > v.iov_len)
		*len = v.iov_len;
	return (__u64)v.iov_base;
}

/* sendmmsg/recvmmsg(fd, msgvec, vlen, flags): `ret` messages done. */
static __always_inline int mmsg_done(long ret, __u16 probe, __u8 direction)
{
	if (ret <= 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u8 proto = 0;
	struct sock *sk = inet_sock_of_fd(PT_REGS_PARM1_CORE_SYSCALL(regs), &proto);
	if (!sk || proto != NT_IPPROTO_UDP)
		return 0; /* TCP over sendmmsg/recvmmsg is not captured (README) */
	struct mmsghdr *vec = (struct mmsghdr *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	for (int i = 0; i < NT_MMSG_MAX; i++) {
		if (i >= ret)
			break;
		struct mmsghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m), &vec[i]))
			break;
		__u64 len = m.msg_len;
		__u64 data = first_iov((__u64)m.msg_hdr.msg_iov, m.msg_hdr.msg_iovlen, &len);
		if (data)
			dns_emit(sk, (__u64)m.msg_hdr.msg_name, data, len, probe, direction, id >> 32, (__u32)id);
	}
	return 0;
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* From a file descriptor to a TCP socket, its addresses, and the capture filters. */
#ifndef NETTAP_SOCK_BPF_H
#define NETTAP_SOCK_BPF_H

#include "maps.bpf.h"

#define NT_AF_INET 2
#define NT_AF_INET6 10
#define NT_SOCK_STREAM 1
#define NT_SOCK_DGRAM 2
#define NT_IPPROTO_TCP 6
#define NT_IPPROTO_UDP 17
#define NT_S_IFMT 00170000
#define NT_S_IFSOCK 0140000

/*
 * The open file behind `fd` in the current task's table, or 0. The loads up
 * to the table go through the task's BTF pointer (plain loads the kernel
 * guards, no helper call); the slot itself is one read.
 */
static __always_inline __u64 file_of_fd(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	if (!files)
		return 0;
	struct fdtable *fdt = files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return 0;
	struct file **fds = fdt->fd;
	__u64 file = 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return 0;
	return file;
}

/* The `struct sock` of open file `f`, a socket file (two reads, no checks). */
static __always_inline __u64 sock_of_socket_file(__u64 f)
{
	struct socket *sock = BPF_CORE_READ((struct file *)f, private_data);
	return sock ? (__u64)BPF_CORE_READ(sock, sk) : 0;
}

/*
 * The IPv4/IPv6 socket of open file `f` when it is TCP (stream) or UDP
 * (datagram), with its protocol in *proto; else NULL.
 */
static __always_inline struct sock *inet_sock_of_file(__u64 f, __u8 *proto)
{
	struct file *file = (struct file *)f;
	if (!file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & NT_S_IFMT) != NT_S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return NULL;
	short type = BPF_CORE_READ(sock, type);
	if (type != NT_SOCK_STREAM && type != NT_SOCK_DGRAM)
		return NULL;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != NT_AF_INET && family != NT_AF_INET6)
		return NULL;
	__u8 p = BPF_CORE_READ(sk, sk_protocol);
	if (!(p == NT_IPPROTO_TCP && type == NT_SOCK_STREAM) && !(p == NT_IPPROTO_UDP && type == NT_SOCK_DGRAM))
		return NULL;
	*proto = p;
	return sk;
}

/* The IPv4/IPv6 TCP or UDP socket behind `fd` (see inet_sock_of_file). */
static __always_inline struct sock *inet_sock_of_fd(__u32 fd, __u8 *proto)
{
	return inet_sock_of_file(file_of_fd(fd), proto);
}

/* The TCP socket behind `fd` in the current task's file table, or NULL. */
static __always_inline struct sock *tcp_sock_of_fd(__u32 fd)
{
	__u8 proto = 0;
	struct sock *sk = inet_sock_of_fd(fd, &proto);
	return proto == NT_IPPROTO_TCP ? sk : NULL;
}

static __always_inline void ipv4_mapped(__u8 out[16], __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

/* Addresses and ports as the socket has them now. */
static __always_inline void read_ends(struct sock *sk, struct conn_ends *e)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	/* A closing socket may have given its port back (skc_num 0, as a
	 * client's does on its way to TIME_WAIT); its source port stays. */
	if (!e->lport)
		e->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (e->family == NT_AF_INET) {
		ipv4_mapped(e->laddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		ipv4_mapped(e->raddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline void ends_into(const struct conn_ends *e, struct nt_conn_ident *id)
{
	__builtin_memcpy(id->laddr, e->laddr, sizeof(id->laddr));
	__builtin_memcpy(id->raddr, e->raddr, sizeof(id->raddr));
	id->lport = e->lport;
	id->rport = e->rport;
	id->family = e->family;
	id->netns = e->netns;
}

/* Addresses and ports as the socket has them now, into a record's identity. */
static __always_inline void read_endpoints(struct sock *sk, struct nt_conn_ident *id)
{
	struct conn_ends e = {};
	read_ends(sk, &e);
	ends_into(&e, id);
}

/* --pid: whether process `tgid` is wanted at all (also for finding its libraries). */
static __always_inline bool tgid_wanted(__u32 tgid)
{
	if (tgid == CONFIG.self_tgid)
		return false;
	if (CONFIG.filter_pids && !bpf_map_lookup_elem(&pid_filter, &tgid))
		return false;
	return true;
}

/*
 * Kubernetes mode: the policy of the calling task's cgroup, if it has one,
 * and in `wanted` whether its traffic is captured. Called in the context of
 * the process whose traffic it is (syscall exits, uprobes, tcp_*msg).
 */
static __always_inline const struct nt_cgroup_policy *current_cgroup_policy(bool *wanted)
{
	__u32 zero = 0;
	__u32 *mode = bpf_map_lookup_elem(&cgroup_mode, &zero);
	*wanted = true;
	if (!mode || *mode == NT_CGROUP_OFF)
		return NULL;
	__u64 cg = bpf_get_current_cgroup_id();
	const struct nt_cgroup_policy *p = bpf_map_lookup_elem(&cgroup_policy, &cg);
	if (!p) {
		*wanted = *mode == NT_CGROUP_UNLISTED_CAPTURED;
		return NULL;
	}
	*wanted = p->capture != 0;
	return p;
}

/* --pid, and in Kubernetes mode the process's cgroup: whether its traffic is captured. */
static __always_inline bool pid_wanted(__u32 tgid)
{
	if (!tgid_wanted(tgid))
		return false;
	bool wanted;
	current_cgroup_policy(&wanted);
	return wanted;
}

/* --port, and in Kubernetes mode the port filter of the process's workload. */
static __always_inline bool ports_wanted(struct sock *sk)
{
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (CONFIG.filter_ports && !bpf_map_lookup_elem(&port_filter, &lport) &&
	    !bpf_map_lookup_elem(&port_filter, &rport))
		return false;
	bool wanted;
	const struct nt_cgroup_policy *p = current_cgroup_policy(&wanted);
	if (!p || p->nports == 0)
		return true;
	for (int i = 0; i < NT_CGROUP_PORTS; i++) {
		if (i >= p->nports)
			break;
		if (p->ports[i] == lport || p->ports[i] == rport)
			return true;
	}
	return false;
}

/*
 * If a TLS library call (SSL_read/SSL_write) is running on this thread, its
 * SSL object talks through `sk`: remember that for the call's return. Done
 * before the port filter, so the plaintext side can apply it itself. `file`:
 * the open file the call's syscall named, 0 when not known (a binding that
 * knows it keeps it).
 */
static __always_inline void bind_ssl_socket(const struct ssl_key *key, __u64 sk, __u64 file)
{
	/* Most calls find the binding made: two lookups cost a fraction of two
	 * LRU updates, and an LRU lookup keeps its entry young as an update would. */
	struct ssl_binding b = { .sk = sk, .file = file };
	struct ssl_binding *bound = bpf_map_lookup_elem(&ssl_sockets, key);
	if (bound && bound->sk == sk) {
		if (!file)
			b.file = bound->file;
		struct ssl_key *owner = bpf_map_lookup_elem(&socket_ssl, &sk);
		if (bound->file == b.file && owner && owner->ssl == key->ssl && owner->tgid == key->tgid)
			return;
	}
	bpf_map_update_elem(&ssl_sockets, key, &b, BPF_ANY);
	bpf_map_update_elem(&socket_ssl, &sk, key, BPF_ANY);
}

static __always_inline void learn_ssl_socket(struct sock *sk, __u32 tgid, __u64 file)
{
	struct ssl_call *call = current_ssl_call();
	if (call) {
		struct ssl_key key = { .ssl = call->ssl, .tgid = tgid };
		bind_ssl_socket(&key, (__u64)sk, file);
	}
}

/* A socket closed: its SSL object, if any, no longer talks through it. */
static __always_inline void forget_ssl_socket(__u64 sk)
{
	struct ssl_key *owner = bpf_map_lookup_elem(&socket_ssl, &sk);
	if (!owner)
		return;
	struct ssl_key key = *owner;
	struct ssl_binding *bound = bpf_map_lookup_elem(&ssl_sockets, &key);
	if (bound && bound->sk == sk)
		bpf_map_delete_elem(&ssl_sockets, &key);
	bpf_map_delete_elem(&socket_ssl, &sk);
}

/* The TCP socket behind `fd` if process `tgid` and the socket's ports are wanted, else NULL. */
static __always_inline struct sock *wanted_tcp_sock(__u32 tgid, __u32 fd)
{
	if (!pid_wanted(tgid))
		return NULL;
	struct sock *sk = tcp_sock_of_fd(fd);
	if (!sk)
		return NULL;
	learn_ssl_socket(sk, tgid, 0);
	if (!ports_wanted(sk))
		return NULL;
	return sk;
}

#endif

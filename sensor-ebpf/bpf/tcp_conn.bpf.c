/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection lifecycle, shared by both kernel data paths: connect() and
 * accept() say who opened a connection and in which role; the socket's move
 * to TCP_CLOSE (from any path, RST included) ends it.
 */

#include "emit.bpf.h"

#define NT_EINPROGRESS 115
#define NT_TCP_LISTEN 10

/* A socket with no entry closed: reported only while entries may have been
 * evicted (maps.bpf.h), with TCP's counters for its byte totals. */
static __always_inline void close_untracked(struct sock *sk, int oldstate)
{
	__u32 k_at = NT_PRESSURE_AT, k_seen = NT_PRESSURE_EVICTIONS_SEEN;
	__u64 *at = bpf_map_lookup_elem(&conn_pressure, &k_at);
	__u64 *seen = bpf_map_lookup_elem(&conn_pressure, &k_seen);
	if (!at || !seen || oldstate == NT_TCP_LISTEN)
		return;
	__s64 held = (__s64)(conn_entries_added - conn_entries_closed - *seen);
	if (held < (__s64)*at)
		return;
	struct conn_state st = {};
	stream_offsets(sk, &st.send_seq, &st.recv_seq);
	read_ends(sk, &st.ends);
	emit_conn(&st, NT_CONN_CLOSE_UNTRACKED, NT_PROBE_SOCK_SET_STATE, 0, 0);
}

/* connect(fd, …): the fd comes from the saved user registers, as in tcp_syscalls.bpf.c. */
SEC("tracepoint/syscalls/sys_exit_connect")
int tp_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret != 0 && ret != -NT_EINPROGRESS)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct sock *sk = wanted_tcp_sock(id >> 32, PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (!sk)
		return 0;
	conn_open(sk, NT_ROLE_CLIENT, NT_PROBE_SYS_CONNECT, id >> 32, (__u32)id);
	return 0;
}

static __always_inline int accept_exit(long ret, __u32 probe)
{
	if (ret < 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct sock *sk = wanted_tcp_sock(id >> 32, ret);
	if (!sk)
		return 0;
	conn_open(sk, NT_ROLE_SERVER, probe, id >> 32, (__u32)id);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret, NT_PROBE_SYS_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret, NT_PROBE_SYS_ACCEPT4);
}

/* Per CPU: 1 while rtp_sock_set_state runs there. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} set_state_running SEC(".maps");

/* Per CPU: state changes rtp_sock_set_state_nested handled because the
 * kernel skipped rtp_sock_set_state for them (the sensor takes them off
 * that program's recursion misses: they are not lost). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} set_state_recovered SEC(".maps");

static __always_inline void sock_set_state(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	if ((int)ctx->args[2] != NT_TCP_CLOSE || BPF_CORE_READ(sk, sk_protocol) != NT_IPPROTO_TCP)
		return;
	__u64 key = (__u64)sk;
	forget_ssl_socket(key);
	struct conn_state *cs = conn_lookup(&key);
	if (!cs) {
		close_untracked(sk, (int)ctx->args[1]);
		return;
	}
	struct conn_state st = *cs;
	conn_forget(&key);
	emit_conn(&st, NT_CONN_CLOSE, NT_PROBE_SOCK_SET_STATE, st.pid, 0);
}

/*
 * Socket state changes, for closes: a raw tracepoint, not the perf one. The
 * kernel skips a perf tracepoint's program whenever any BPF program runs on
 * that CPU, and most closes come in softirq (the peer's FIN or ACK), which
 * often interrupts a syscall program; a raw tracepoint's program is skipped
 * only when it interrupts itself. That still happens (a close in softirq
 * while this program ran for a state change in process context: 818 of
 * 100 000 connections closing at once), so the tracepoint has a second
 * program, attached after this one: it runs the state change when this one
 * was skipped, which it knows from the flag this one holds while it runs.
 * Arguments: TP_PROTO(sk, oldstate, newstate).
 */
SEC("raw_tracepoint/inet_sock_set_state")
int rtp_sock_set_state(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u32 *running = bpf_map_lookup_elem(&set_state_running, &zero);
	if (running)
		*running = 1;
	sock_set_state(ctx);
	if (running)
		*running = 0;
	return 0;
}

SEC("raw_tracepoint/inet_sock_set_state")
int rtp_sock_set_state_nested(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u32 *running = bpf_map_lookup_elem(&set_state_running, &zero);
	if (!running || !*running)
		return 0; /* rtp_sock_set_state ran for this change */
	sock_set_state(ctx);
	__u64 *recovered = bpf_map_lookup_elem(&set_state_recovered, &zero);
	if (recovered)
		*recovered += 1;
	return 0;
}

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

/*
 * State changes rtp_sock_set_state took, per CPU, so that
 * rtp_sock_set_state_nested (attached after it) knows whether it ran for the
 * same change. Both are called for one change from the same tracepoint loop,
 * so they run on the same stack frame; a change in an interrupt runs on
 * another frame (deeper, or on the interrupt stack). An entry
 * is keyed by that frame: the first program claims it (taking the slot its
 * frame had, a free one, or the next in turn), the second clears it. A slot
 * whose second program was skipped is left behind and reused by its frame or
 * in turn; it can only make the second program run a change again (a close
 * whose entry is gone then does nothing), never skip one. Every change is
 * recorded, not only closes: the kernel counts each skipped run, and the
 * sensor subtracts the runs the second program made up for.
 */
#define NT_TAKEN_SLOTS 8

struct taken_change {
	__u64 frame;
	__u64 sk;
	__u64 states; /* old and new state */
};

struct taken_changes {
	struct taken_change slot[NT_TAKEN_SLOTS];
	__u32 next;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct taken_changes);
} set_state_taken SEC(".maps");

/* Per CPU: state changes rtp_sock_set_state_nested ran because
 * rtp_sock_set_state had not taken them (the sensor takes them off that
 * program's recursion misses: they are not lost). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} set_state_recovered SEC(".maps");

/* This program's frame address: equal in both programs for one change.
 * Reading the stack pointer as a number needs CAP_PERFMON, which attaching
 * these programs needs anyway. */
static __always_inline __u64 frame_address(void)
{
	__u64 fp;
	asm volatile("%0 = r10" : "=r"(fp));
	return fp;
}

static __always_inline __u64 change_states(struct bpf_raw_tracepoint_args *ctx)
{
	return (ctx->args[1] & 0xffff) | (ctx->args[2] & 0xffff) << 16;
}

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
 * 100 000 connections closing at once, in bursts of hundreds when one
 * interrupt carries many closes), so the tracepoint has a second program
 * that runs every change this one did not take (set_state_taken above). A flag
 * this program held while it ran was not enough: an interrupt landing in
 * the program before the flag was set or after it was cleared lost its
 * whole burst.
 * Arguments: TP_PROTO(sk, oldstate, newstate).
 */
SEC("raw_tracepoint/inet_sock_set_state")
int rtp_sock_set_state(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct taken_changes *taken = bpf_map_lookup_elem(&set_state_taken, &zero);
	if (taken) {
		__u64 frame = frame_address();
		__u32 at = NT_TAKEN_SLOTS, free_at = NT_TAKEN_SLOTS;
#pragma unroll
		for (__u32 i = 0; i < NT_TAKEN_SLOTS; i++) {
			if (taken->slot[i].frame == frame)
				at = i;
			else if (taken->slot[i].frame == 0)
				free_at = i;
		}
		if (at == NT_TAKEN_SLOTS)
			at = free_at;
		if (at == NT_TAKEN_SLOTS)
			at = taken->next++ % NT_TAKEN_SLOTS;
		if (at < NT_TAKEN_SLOTS) {
			/* The frame first: an interrupt arriving between these
			 * stores then sees the slot as taken. */
			taken->slot[at].frame = frame;
			asm volatile("" ::: "memory");
			taken->slot[at].sk = ctx->args[0];
			taken->slot[at].states = change_states(ctx);
		}
	}
	sock_set_state(ctx);
	return 0;
}

SEC("raw_tracepoint/inet_sock_set_state")
int rtp_sock_set_state_nested(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct taken_changes *taken = bpf_map_lookup_elem(&set_state_taken, &zero);
	if (!taken)
		return 0;
	__u64 frame = frame_address();
#pragma unroll
	for (__u32 i = 0; i < NT_TAKEN_SLOTS; i++) {
		if (taken->slot[i].frame != frame)
			continue;
		if (taken->slot[i].sk == ctx->args[0] && taken->slot[i].states == change_states(ctx)) {
			taken->slot[i].frame = 0;
			return 0; /* rtp_sock_set_state ran for this change */
		}
	}
	sock_set_state(ctx);
	__u64 *recovered = bpf_map_lookup_elem(&set_state_recovered, &zero);
	if (recovered)
		*recovered += 1;
	return 0;
}

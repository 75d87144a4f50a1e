/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS datagrams sent or received in batches (glibc asks A and AAAA with one
 * sendmmsg): watched for DNS only; the single-datagram syscalls are handled
 * with the others in tcp_syscalls.bpf.c. A fragment of nettap.bpf.c.
 */
#include "dns.bpf.h"

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int tp_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return mmsg_done(ctx->ret, NT_PROBE_SYS_SENDMMSG, NT_DIR_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int tp_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return mmsg_done(ctx->ret, NT_PROBE_SYS_RECVMMSG, NT_DIR_RECV);
}

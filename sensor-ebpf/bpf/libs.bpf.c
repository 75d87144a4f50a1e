/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Libraries loaded after start-up (dlopen, a new process with its own copy,
 * a container): an executable mapping of a TLS library's file (libssl*,
 * libgnutls*, grpcio's cygrpc.*: BoringSSL inside) is reported, so the sensor probes it while the process is
 * still setting up.
 */

#include "emit.bpf.h"

#define NT_PROT_EXEC 4

/* Whether `name` starts with `prefix` (a string literal: the loop unrolls). */
#define NAME_STARTS(name, prefix) name_starts(name, prefix, sizeof(prefix) - 1)

static __always_inline bool name_starts(const char *name, const char *prefix, int n)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (i >= n)
			return true;
		if (name[i] != prefix[i])
			return false;
	}
	return true;
}

/* The libraries whose mapping the sensor wants to hear about. */
static __always_inline bool tls_library_name(const char *name)
{
	return NAME_STARTS(name, "libssl") || NAME_STARTS(name, "libgnutls.so") ||
	       NAME_STARTS(name, "cygrpc.");
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int tp_exit_mmap(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret < 0 && ctx->ret > -4096)
		return 0; /* failed */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!(PT_REGS_PARM3_CORE_SYSCALL(regs) & NT_PROT_EXEC))
		return 0;
	int fd = PT_REGS_PARM5_CORE_SYSCALL(regs);
	if (fd < 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if (!tgid_wanted(id >> 32))
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	char name[32] = {};
	const unsigned char *dname = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(name, sizeof(name), dname) < 7)
		return 0;
	if (!tls_library_name(name))
		return 0;

	struct nt_lib_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(NT_DROP_RINGBUF_FULL_EVENT, 0);
		return 0;
	}
	ev->kind = NT_EV_LIB;
	ev->pid = id >> 32;
	ev->ts_ns = bpf_ktime_get_boot_ns();
	ev->ino = BPF_CORE_READ(file, f_inode, i_ino);
	__builtin_memcpy(ev->name, name, sizeof(name));
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* A new program: it may carry OpenSSL linked in (Node.js, static builds). */
SEC("tracepoint/sched/sched_process_exec")
int tp_sched_exec(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!tgid_wanted(id >> 32))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct nt_lib_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(NT_DROP_RINGBUF_FULL_EVENT, 0);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = NT_EV_EXEC;
	ev->pid = id >> 32;
	ev->ts_ns = bpf_ktime_get_boot_ns();
	ev->ino = BPF_CORE_READ(task, mm, exe_file, f_inode, i_ino);
	bpf_get_current_comm(ev->name, sizeof(ev->name));
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* The last thread of a process ended (the kernel counted the group dead
 * before this tracepoint): the sensor forgets what it kept for the pid. */
SEC("tracepoint/sched/sched_process_exit")
int tp_sched_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!tgid_wanted(id >> 32))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads live on */
	struct nt_lib_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(NT_DROP_RINGBUF_FULL_EVENT, 0);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = NT_EV_EXIT;
	ev->pid = id >> 32;
	ev->ts_ns = bpf_ktime_get_boot_ns();
	bpf_get_current_comm(ev->name, sizeof(ev->name));
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

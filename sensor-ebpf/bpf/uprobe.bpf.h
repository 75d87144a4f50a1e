/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every uprobe program exists twice: NAME in a "uprobe" section (a perf event
 * per attach point: any kernel) and NAME_m in "uprobe.multi" (one link for
 * all of a file's points, Linux 6.6+). The loader loads one set. With one
 * link per file, detaching a library's probes waits for the kernel's grace
 * periods once rather than once per point (a few hundred points took 20 s).
 */
#pragma once

#define NT_UPROBE_TWICE(name, single_sec, multi_sec)                          \
	static __always_inline int name##_body(struct pt_regs *ctx);          \
	SEC(single_sec) int name(struct pt_regs *ctx) { return name##_body(ctx); } \
	SEC(multi_sec) int name##_m(struct pt_regs *ctx) { return name##_body(ctx); } \
	static __always_inline int name##_body(struct pt_regs *ctx)

/* NT_UPROBE(name) { body using ctx } */
#define NT_UPROBE(name) NT_UPROBE_TWICE(name, "uprobe", "uprobe.multi")
/* NT_URETPROBE(name) { body using ctx; PT_REGS_RC(ctx) is the result } */
#define NT_URETPROBE(name) NT_UPROBE_TWICE(name, "uretprobe", "uretprobe.multi")

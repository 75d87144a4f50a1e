// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The one eBPF object of the sensor. Program families live in their own
 * headers and share the maps of maps.bpf.h; the sensor loads and attaches
 * only the families it chooses at run time.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "tcp_conn.bpf.h"
#include "tcp_kprobe.bpf.h"   /* before tcp_syscalls.bpf.h, which uses kp_done */
#include "tcp_syscalls.bpf.h"
#include "openssl.bpf.h"
#include "go_tls.bpf.h"
#include "libs.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

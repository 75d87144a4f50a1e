// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The one eBPF object of the sensor. Program families live in their own
 * .bpf.c fragments, included here, and share the maps of maps.bpf.h and the
 * helpers of the other .bpf.h files; the sensor loads and attaches only the
 * families it chooses at run time.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

/* Program families, one fragment each (helpers and maps live in *.bpf.h). */
#include "tcp_conn.bpf.c"
#include "tcp_kprobe.bpf.c"   /* before tcp_syscalls.bpf.c, which uses kp_done */
#include "tcp_syscalls.bpf.c"
#include "dns.bpf.c"
#include "uprobe.bpf.h"
#include "openssl.bpf.c"
#include "gnutls.bpf.c"     /* after openssl.bpf.c, whose call tracking it shares */
#include "nss.bpf.c"        /* likewise */
#include "boringssl.bpf.c" /* after openssl.bpf.c: shares its call tracking */
#include "rustls.bpf.c"    /* after openssl.bpf.c: shares its socket binding */
#include "go_tls.bpf.c"
#include "libs.bpf.c"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

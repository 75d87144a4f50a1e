/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel structs whose shape changed across the releases the sensor runs on
 * (5.17 and later), as CO-RE flavors: the `___suffix` is dropped when
 * libbpf matches a flavor against the running kernel's BTF, and
 * bpf_core_field_exists() tells which one is there. Each flavor names the
 * kernel change it stands for.
 */
#ifndef NETTAP_CORE_FIXES_BPF_H
#define NETTAP_CORE_FIXES_BPF_H

#include "vmlinux.h"

/*
 * struct iov_iter, Linux 6.4 and later: the iovec array pointer was renamed
 * `iov` -> `__iov` (read through iter_iov() since "iov_iter: add iter_iovec()
 * helper", 6.4), next to `ubuf`, the single user buffer of the ITER_UBUF
 * flavour that Linux 6.0 added for one-segment reads and writes.
 */
struct iov_iter___v64 {
	__u8 iter_type;
	size_t iov_offset;
	const struct iovec *__iov;
	void *ubuf;
	unsigned long nr_segs;
} __attribute__((preserve_access_index));

/*
 * struct iov_iter, Linux 5.14 to 6.3: `iov`; `iter_type` became its own u8
 * field in 5.14 ("iov_iter: Separate type from direction and use accessor
 * functions").
 */
struct iov_iter___v514 {
	__u8 iter_type;
	size_t iov_offset;
	const struct iovec *iov;
	unsigned long nr_segs;
} __attribute__((preserve_access_index));

#endif

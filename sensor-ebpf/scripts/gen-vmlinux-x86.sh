#!/usr/bin/env bash
# Regenerates bpf/vmlinux/x86/vmlinux.h from the running x86_64 kernel's BTF.
# CO-RE relocates every field access at load time, so one recent kernel's
# types serve older and newer kernels alike.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -m)" = x86_64 ] || { echo "run on an x86_64 machine" >&2; exit 1; }
bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux/x86/vmlinux.h
echo "wrote bpf/vmlinux/x86/vmlinux.h ($(uname -r))"

#!/usr/bin/env bash
# Regenerates bpf/vmlinux/arm64/vmlinux.h on any Debian machine, from a real
# arm64 kernel's BTF: Debian's arm64 kernel Image is uncompressed and carries
# its .BTF section inside, so we find the BTF header (magic 0xEB9F, version 1,
# hdr_len 24, strings right after types) and hand that blob to bpftool.
# Used: linux-image-6.12.117+deb12-arm64-unsigned (6.12.117-1~deb12u1).
set -euo pipefail
cd "$(dirname "$0")/.."
pkg="${1:-}"
work="$(mktemp -d)"
added_arch=0
cleanup() {
  rm -rf "$work"
  if [ "$added_arch" = 1 ]; then
    if dpkg-query -W -f='${Architecture}\n' | grep -qx arm64; then
      echo "arm64 packages installed; leaving arm64 architecture enabled" >&2
    else
      dpkg --remove-architecture arm64 && apt-get update -qq || true
    fi
  fi
}
trap cleanup EXIT

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  added_arch=1
  apt-get update -qq
fi
if [ -z "$pkg" ]; then
  # generic flavour only: -rt-arm64 (PREEMPT_RT) and -cloud-arm64 also match and sort last
  pkg="$(apt-cache search --names-only '^linux-image-[0-9].*-arm64-unsigned$' | cut -d' ' -f1 \
    | grep -Ev -- '-(rt|cloud)-arm64-unsigned$' | sort -V | tail -1)"
fi
echo "using $pkg"
(cd "$work" && apt-get download "$pkg:arm64" && dpkg-deb -x ./*.deb x)
python3 - "$work" <<'PY'
import glob, struct, sys
work = sys.argv[1]
img = open(glob.glob(f"{work}/x/boot/vmlinuz-*")[0], "rb").read()
needle = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"  # magic, version 1, flags 0, hdr_len 24
best, i = None, img.find(needle)
while i >= 0:
    type_off, type_len, str_off, str_len = struct.unpack("<IIII", img[i + 8:i + 24])
    total = 24 + str_off + str_len
    if type_off == 0 and str_off == type_len and 0 < total <= len(img) - i and img[i + 24 + str_off] == 0:
        if best is None or total > best[1]:
            best = (i, total)
    i = img.find(needle, i + 1)
if best is None:
    sys.exit("no BTF found in the Image (compressed? built without CONFIG_DEBUG_INFO_BTF?)")
open(f"{work}/arm64.btf", "wb").write(img[best[0]:best[0] + best[1]])
PY
bpftool btf dump file "$work/arm64.btf" format c > bpf/vmlinux/arm64/vmlinux.h
grep -q '^struct user_pt_regs {' bpf/vmlinux/arm64/vmlinux.h
echo "wrote bpf/vmlinux/arm64/vmlinux.h from $pkg"

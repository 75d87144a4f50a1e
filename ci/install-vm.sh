#!/usr/bin/env bash
# Sourced by ci/install.sh (which installs qemu-system-x86): Debian's 6.1
# kernel and an initramfs for the guest tests (tests/src/vm.rs), cached under
# ~/.cache/nettap/vm/<kernel package>-<init hash>. Exports NETTAP_VM (that
# directory: vmlinuz, initrd). A second run only resolves the package name.
set -euo pipefail

vm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vm_cache="$HOME/.cache/nettap/vm"
# The generic flavour: it has 9p (the cloud flavour only virtiofs, which
# needs a virtiofsd daemon per guest). Named through the metapackage, since
# Debian keeps only the current ABI's package on its mirrors.
vm_meta=linux-image-amd64
vm_kpkg="$(apt-cache depends "$vm_meta" 2>/dev/null | awk '/Depends: linux-image-/ && !n { print $2; n = 1 }' || true)"
if [ -z "$vm_kpkg" ]; then
  apt-get update -qq
  vm_kpkg="$(apt-cache depends "$vm_meta" | awk '/Depends: linux-image-/ && !n { print $2; n = 1 }')"
fi
vm_kver="${vm_kpkg#linux-image-}"
vm_init_sum="$(sha256sum "$vm_root/ci/vm-init.sh" "$vm_root/ci/install-vm.sh" | sha256sum | cut -c1-12)"
export NETTAP_VM="$vm_cache/$vm_kver-$vm_init_sum"

if [ ! -e "$NETTAP_VM/complete" ]; then
  echo "ci/install-vm.sh: fetching $vm_kpkg and busybox-static, building the guest initramfs (once)"
  vm_tmp="$(mktemp -d)"
  chmod 755 "$vm_tmp" # apt-get download drops privileges to _apt
  (
    cd "$vm_tmp"
    apt-get download -qq "$vm_kpkg" busybox-static 2>/dev/null ||
      { apt-get update -qq && apt-get download -qq "$vm_kpkg" busybox-static; }
    dpkg-deb -x linux-image-*.deb k
    dpkg-deb -x busybox-static_*.deb bb
    bb="$vm_tmp/bb/bin/busybox"
    # Only the modules /init loads (and theirs), with their own modules.dep.
    "$bb" depmod -b k "$vm_kver"
    mods=k/lib/modules/$vm_kver
    mkdir -p initrd/bin initrd/proc initrd/sys initrd/dev "initrd/lib/modules/$vm_kver"
    for m in virtio_pci 9pnet_virtio 9p overlay veth; do
      line="$(grep -E "(^|/)$m\.ko:" "$mods/modules.dep")" || { echo "no module $m in $vm_kpkg" >&2; exit 1; }
      for f in ${line/:/}; do
        mkdir -p "initrd/lib/modules/$vm_kver/$(dirname "$f")"
        cp "$mods/$f" "initrd/lib/modules/$vm_kver/$f"
      done
    done
    "$bb" depmod -b initrd "$vm_kver"
    cp "$bb" initrd/bin/busybox
    cp "$vm_root/ci/vm-init.sh" initrd/init
    chmod 755 initrd/init
    rm -rf "$NETTAP_VM.tmp" && mkdir -p "$NETTAP_VM.tmp"
    (cd initrd && find . | "$bb" cpio -o -H newc 2>/dev/null) >"$NETTAP_VM.tmp/initrd"
    cp "k/boot/vmlinuz-$vm_kver" "$NETTAP_VM.tmp/vmlinuz"
    echo "$vm_kpkg" >"$NETTAP_VM.tmp/kernel-package"
  )
  rm -rf "$vm_tmp" "$NETTAP_VM"
  mv "$NETTAP_VM.tmp" "$NETTAP_VM"
  touch "$NETTAP_VM/complete"
fi

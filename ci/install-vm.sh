#!/usr/bin/env bash
# Sourced by ci/install.sh (which installs qemu-system-x86 and -arm): Debian's
# 6.1 kernels and initramfs for the guest tests (tests/src/vm.rs), cached under
# ~/.cache/nettap/vm/<kernel package>-<init hash>. Exports NETTAP_VM (x86_64:
# vmlinuz, initrd) and NETTAP_VM_ARM64 (arm64: the same, plus an arm64 userland
# in the initramfs). A second run only resolves the package names.
set -euo pipefail

vm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vm_cache="$HOME/.cache/nettap/vm"

# apt for arm64 packages without adding arm64 to this machine's dpkg: its own
# package lists, cache and (empty) status under the VM cache.
vm_apt_arm64() {
  local d="$vm_cache/apt-arm64"
  mkdir -p "$d/lists/partial" "$d/archives/partial"
  touch "$d/status"
  "$@" -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d" -o Dir::Cache::archives="$d/archives" \
    -o Dir::State::status="$d/status" -o APT::Architecture=arm64 -o APT::Architectures::=arm64 \
    -o APT::Sandbox::User=root
}

# vm_kernel_package ARCH [vm_apt_arm64]: the kernel package behind Debian's linux-image-ARCH
# metapackage (only the current ABI's package stays on the mirrors).
vm_kernel_package() {
  local arch="$1"
  shift
  "$@" apt-cache depends "linux-image-$arch" 2>/dev/null | awk '/Depends: linux-image-/ && !n { print $2; n = 1 }' || true
}

# vm_guest ARCH INIT USERLAND_PKGS... : builds (once) the guest of ARCH with
# INIT as /init and prints its cache directory. The userland packages' files
# go into the initramfs (the arm64 guest cannot run the host's binaries).
vm_guest() {
  local arch="$1" init="$2"
  shift 2
  local apt=()
  [ "$arch" = arm64 ] && apt=(vm_apt_arm64)
  local kpkg
  kpkg="$(vm_kernel_package "$arch" "${apt[@]}")"
  if [ -z "$kpkg" ]; then
    "${apt[@]}" apt-get update -qq >&2
    kpkg="$(vm_kernel_package "$arch" "${apt[@]}")"
  fi
  [ -n "$kpkg" ] || { echo "ci/install-vm.sh: no linux-image-$arch package found" >&2; return 1; }
  local kver="${kpkg#linux-image-}"
  local sum
  sum="$(sha256sum "$vm_root/ci/$init" "$vm_root/ci/install-vm.sh" | sha256sum | cut -c1-12)"
  local dir="$vm_cache/$kver-$sum"
  if [ ! -e "$dir/complete" ]; then
    echo "ci/install-vm.sh: fetching $kpkg, busybox-static${*:+ and $*}, building the $arch guest initramfs (once)" >&2
    local tmp
    tmp="$(mktemp -d)"
    chmod 755 "$tmp" # apt-get download drops privileges to _apt
    (
      cd "$tmp"
      "${apt[@]}" apt-get download -qq "$kpkg" busybox-static "$@" 2>/dev/null ||
        { "${apt[@]}" apt-get update -qq && "${apt[@]}" apt-get download -qq "$kpkg" busybox-static "$@"; }
      mkdir initrd
      for p in "$@"; do
        dpkg-deb -x "$p"_*.deb initrd
      done
      # Locale conversion modules and docs: nothing in the guest reads them.
      rm -rf initrd/usr/share initrd/usr/lib/*-linux-gnu/gconv
      dpkg-deb -x linux-image-*.deb k
      dpkg-deb -x busybox-static_*.deb bb
      # depmod and cpio from this machine's own busybox (the guest's may be arm64).
      mkdir -m 755 tool
      (cd tool && apt-get download -qq busybox-static 2>/dev/null && dpkg-deb -x busybox-static_*.deb .)
      local bb="$tmp/tool/bin/busybox"
      # Only the modules /init loads (and theirs), with their own modules.dep.
      "$bb" depmod -b k "$kver"
      local mods=k/lib/modules/$kver m line f
      mkdir -p initrd/bin initrd/proc initrd/sys initrd/dev "initrd/lib/modules/$kver"
      for m in virtio_pci 9pnet_virtio 9p overlay veth; do
        line="$(grep -E "(^|/)$m\.ko:" "$mods/modules.dep")" || { echo "no module $m in $kpkg" >&2; exit 1; }
        for f in ${line/:/}; do
          mkdir -p "initrd/lib/modules/$kver/$(dirname "$f")"
          cp "$mods/$f" "initrd/lib/modules/$kver/$f"
        done
      done
      "$bb" depmod -b initrd "$kver"
      cp bb/bin/busybox initrd/bin/busybox
      cp "$vm_root/ci/$init" initrd/init
      chmod 755 initrd/init
      rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
      (cd initrd && find . | "$bb" cpio -o -H newc 2>/dev/null) >"$dir.tmp/initrd"
      cp "k/boot/vmlinuz-$kver" "$dir.tmp/vmlinuz"
      echo "$kpkg" >"$dir.tmp/kernel-package"
    ) >&2
    rm -rf "$tmp" "$dir"
    mv "$dir.tmp" "$dir"
    touch "$dir/complete"
  fi
  echo "$dir"
}

# x86_64: the generic flavour, which has 9p (the cloud flavour only virtiofs,
# which needs a virtiofsd daemon per guest); the root is the host's own.
NETTAP_VM="$(vm_guest amd64 vm-init.sh)"
export NETTAP_VM
# arm64: Debian's arm64 C library, OpenSSL library and command in the
# initramfs; the sensor and Go programs cross-built on the host, read over 9p.
NETTAP_VM_ARM64="$(vm_guest arm64 vm-init-arm64.sh libc6 libgcc-s1 libssl3 openssl)"
export NETTAP_VM_ARM64

# Debian's arm64 OpenSSL (libssl-dev: static libraries and headers) for the
# arm64 sensor's librdkafka, instead of building OpenSSL from source on every
# cold target (about 150 s): ci/test.sh points the arm64 build at it.
# Cached by the package's version; the headers that differ by architecture
# are merged into one include directory, as openssl-sys and cmake expect.
vm_arm64_openssl() {
  local version dir tmp
  version="$(vm_apt_arm64 apt-cache policy libssl-dev 2>/dev/null | awk '/Candidate:/ { print $2 }')"
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    vm_apt_arm64 apt-get update -qq
    version="$(vm_apt_arm64 apt-cache policy libssl-dev | awk '/Candidate:/ { print $2 }')"
  fi
  dir="$vm_cache/arm64-openssl-$version"
  if [ ! -e "$dir/.complete" ]; then
    tmp="$(mktemp -d)"
    chmod 755 "$tmp" # apt-get download drops privileges to _apt
    (cd "$tmp" && vm_apt_arm64 apt-get download -qq "libssl-dev=$version" && dpkg-deb -x libssl-dev_*.deb x) ||
      { echo "ci/install-vm.sh: cannot fetch Debian's arm64 libssl-dev $version" >&2; exit 1; }
    rm -rf "$dir" && mkdir -p "$dir/include/openssl" "$dir/lib"
    cp "$tmp"/x/usr/include/openssl/*.h "$tmp"/x/usr/include/aarch64-linux-gnu/openssl/*.h "$dir/include/openssl/"
    cp "$tmp"/x/usr/lib/aarch64-linux-gnu/libssl.a "$tmp"/x/usr/lib/aarch64-linux-gnu/libcrypto.a "$dir/lib/"
    rm -rf "$tmp"
    touch "$dir/.complete"
  fi
  echo "$dir"
}
NETTAP_ARM64_OPENSSL="$(vm_arm64_openssl)"
export NETTAP_ARM64_OPENSSL

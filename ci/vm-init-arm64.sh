#!/bin/busybox sh
# /init of the arm64 guest's initramfs that ci/install-vm.sh builds: busybox,
# Debian's arm64 C library, libssl3 and openssl command, the few kernel
# modules below. The initramfs is the root (the host's x86 programs cannot run
# here); the host's root is mounted read-only at /host over 9p for the
# cross-built sensor and Go programs, the test's shared directory at
# /mnt/nettap. Runs /mnt/nettap/run.sh with busybox sh, writes its exit status
# to /mnt/nettap/status and powers off. tests/src/vm.rs drives it.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "nettap-vm: $*" >/dev/console; }
fail() { say "$*"; poweroff -f; }

for m in virtio_pci 9pnet_virtio 9p veth; do
  modprobe "$m" || fail "modprobe $m failed"
done

opts=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /host /mnt/nettap /tmp /run /dev/pts /dev/shm /etc
mount -t 9p -o "$opts,cache=loose,ro" hostroot /host || fail "mounting the host root (9p) failed"
mount -t 9p -o "$opts" share /mnt/nettap || fail "mounting the shared directory (9p) failed"
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs nodev /sys/kernel/tracing
mount -t debugfs nodev /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
hostname nettap-vm
echo "127.0.0.1 localhost" >/etc/hosts

say "running /mnt/nettap/run.sh on $(uname -r) $(uname -m)"
(cd /mnt/nettap && sh ./run.sh) </dev/console >/dev/console 2>&1
echo $? >/mnt/nettap/status
sync
umount /mnt/nettap
poweroff -f

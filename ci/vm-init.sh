#!/bin/busybox sh
# /init of the guest initramfs that ci/install-vm.sh builds (busybox-static and
# the few kernel modules below). It mounts the host's root, shared read-only
# by qemu over 9p, under a tmpfs overlay (the guest can write anywhere, the host
# sees nothing), mounts the test's shared directory at /mnt/nettap, runs
# /mnt/nettap/run.sh there with bash from the host's root and writes its exit
# status to /mnt/nettap/status, then powers off. tests/src/vm.rs drives it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "nettap-vm: $*" >/dev/console; }
fail() { say "$*"; poweroff -f; }

# veth: the tests' network namespace pairs. Everything else they use is built in.
for m in virtio_pci 9pnet_virtio 9p overlay veth; do
  modprobe "$m" || fail "modprobe $m failed"
done

opts=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /lower /rw /root
mount -t 9p -o "$opts,cache=loose,ro" hostroot /lower || fail "mounting the host root (9p) failed"
mount -t tmpfs -o size=75% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /root ||
  fail "overlay over the host root failed"

r=/root
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs tmpfs $r/dev/shm
mount -t tmpfs tmpfs $r/tmp
mount -t tmpfs tmpfs $r/run
mount -t tracefs nodev $r/sys/kernel/tracing
mount -t debugfs nodev $r/sys/kernel/debug
mount -t bpf bpf $r/sys/fs/bpf
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
mkdir -p $r/mnt/nettap
mount -t 9p -o "$opts" share $r/mnt/nettap || fail "mounting the shared directory (9p) failed"
ip link set lo up
hostname nettap-vm

say "running /mnt/nettap/run.sh on $(uname -r)"
chroot $r /bin/bash -c 'cd /mnt/nettap && exec bash ./run.sh' </dev/console >/dev/console 2>&1
echo $? >$r/mnt/nettap/status
sync
umount $r/mnt/nettap
poweroff -f

//! Runs a script inside another kernel, under qemu: the kernel matrix
//! (Debian's 6.1, which has kprobes, where our machines' kernel has none, on
//! x86_64 and on arm64).
//!
//! The guest's root is the host's own, shared read-only over 9p under a tmpfs
//! overlay (ci/vm-init.sh), rather than an initramfs holding the test's
//! programs: the end-to-end tests run python, openssl, nginx, curl, Go and
//! their own test binaries, and each would otherwise have to be copied in with
//! its whole runtime. The same absolute paths work on both sides, so a test
//! binary built on the host runs in the guest unchanged. The kernel and the
//! initramfs (busybox and the 9p/overlay modules) come from ci/install-vm.sh.
//!
//! The arm64 guest cannot run the host's programs: its initramfs is its root
//! (busybox, Debian's arm64 C library and OpenSSL), the host's root is at
//! `/host` for the cross-built sensor and Go programs, and scripts run with
//! busybox sh (ci/vm-init-arm64.sh).
//!
//! Software emulation only: `/dev/kvm` exists on our machines, but a KVM
//! guest hangs right after the kernel is decompressed (nested virtualisation).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bootable guest: the kernel and initramfs ci/install-vm.sh cached.
pub struct Guest {
    dir: PathBuf,
    arm64: bool,
}

/// What a guest run left.
pub struct GuestRun {
    /// The script's exit status; `None` if it never wrote one (timeout, panic).
    pub status: Option<i32>,
    /// Everything on the guest's console: boot messages and the script's output.
    pub console: String,
    /// The directory shared with the guest (`/mnt/nettap` inside), kept for
    /// files the script wrote.
    pub share: tempfile::TempDir,
    /// Boot to power-off (or to the timeout).
    pub wall: Duration,
}

impl Guest {
    /// Debian's 6.1 kernel for x86_64 (`$NETTAP_VM`, exported by ci/install.sh).
    pub fn debian_6_1() -> Guest {
        Guest::from_env("NETTAP_VM", false)
    }

    /// Debian's 6.1 kernel for arm64 (`$NETTAP_VM_ARM64`, exported by ci/install.sh).
    pub fn debian_6_1_arm64() -> Guest {
        Guest::from_env("NETTAP_VM_ARM64", true)
    }

    fn from_env(var: &str, arm64: bool) -> Guest {
        let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{var} is not set: run `source ci/install.sh` (ci/install-vm.sh fetches the guest kernel)")
        });
        for f in ["vmlinuz", "initrd", "complete"] {
            assert!(dir.join(f).exists(), "{} is missing: ci/install-vm.sh builds it", dir.join(f).display());
        }
        Guest { dir, arm64 }
    }

    /// The Debian package the kernel came from (`linux-image-6.1.0-…-amd64`).
    pub fn kernel_package(&self) -> String {
        std::fs::read_to_string(self.dir.join("kernel-package")).unwrap_or_default().trim().to_string()
    }

    /// Boots the guest, runs `script` with bash (busybox sh on arm64) as root in `/mnt/nettap`
    /// (after `export`s of `env`) and powers off. qemu is killed after `timeout`.
    pub fn run(&self, script: &str, env: &[(&str, &str)], timeout: Duration) -> GuestRun {
        self.run_with_files(script, env, &[], timeout)
    }

    /// `run` with `files` (name, contents) put in `/mnt/nettap` first.
    pub fn run_with_files(
        &self,
        script: &str,
        env: &[(&str, &str)],
        files: &[(&str, &[u8])],
        timeout: Duration,
    ) -> GuestRun {
        let share = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(share.path().join(name), contents).unwrap();
        }
        let mut text = String::from("set -u\n");
        for (k, v) in env {
            text.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
        text.push_str(script);
        std::fs::write(share.path().join("run.sh"), text).unwrap();
        // The console is not in the share: the guest could overwrite it.
        let console_dir = tempfile::tempdir().unwrap();
        let console_path = console_dir.path().join("console");
        let console = std::fs::File::create(&console_path).unwrap();

        let start = Instant::now();
        let mut qemu = self
            .command(share.path())
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("qemu-system-x86_64 and qemu-system-aarch64 are required for the guest tests: ci/install.sh installs them");
        let timed_out = loop {
            if qemu.try_wait().unwrap().is_some() {
                break false;
            }
            if start.elapsed() > timeout {
                let _ = qemu.kill();
                let _ = qemu.wait();
                break true;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let wall = start.elapsed();
        let mut console = String::from_utf8_lossy(&std::fs::read(&console_path).unwrap()).into_owned();
        if timed_out {
            console.push_str(&format!("\n[guest killed after {timeout:?}]\n"));
        }
        let status =
            std::fs::read_to_string(share.path().join("status")).ok().and_then(|s| s.trim().parse().ok());
        GuestRun { status, console, share, wall }
    }

    fn command(&self, share: &Path) -> Command {
        let mut c;
        if self.arm64 {
            c = Command::new("qemu-system-aarch64");
            // pauth-impdef: pointer authentication with qemu's cheap
            // algorithm (the architected one dominates emulation time).
            c.args(["-M", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on", "-smp", "2", "-m", "2048"]);
        } else {
            c = Command::new("qemu-system-x86_64");
            // la57=off: 4-level paging, as our machines have. With `max`'s
            // 5-level paging a sensor start took 20-30 % longer under
            // emulation (two A/B boots of a shared machine, noisy).
            c.args(["-accel", "tcg", "-cpu", "max,la57=off", "-smp", "2", "-m", "3072"]);
        }
        let console = if self.arm64 { "ttyAMA0" } else { "ttyS0" };
        c.args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(self.dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(self.dir.join("initrd"))
            // panic=-1 and -no-reboot: a guest that panics ends at once.
            // softlockup_panic: a CPU stuck in the kernel for a minute
            // (watchdog_thresh 30 s, twice it; a host that stalls a vCPU
            // for seconds is not mistaken for it) panics, printing its
            // stack, instead of holding the run until the test's time
            // bound (seen once on 6.1: two CPUs stuck for 10+ minutes in
            // the disarmed suite, with no stack on the quiet console).
            .arg("-append")
            .arg(format!("console={console} quiet loglevel=3 panic=-1 softlockup_panic=1 watchdog_thresh=30"))
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=share,security_model=none", share.display()));
        c
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

//! Runs a script inside another kernel, under qemu: the kernel matrix
//! (Debian's 6.1, which has kprobes, where our machines' kernel has none).
//!
//! The guest's root is the host's own, shared read-only over 9p under a tmpfs
//! overlay (ci/vm-init.sh), rather than an initramfs holding the test's
//! programs: the end-to-end tests run python, openssl, nginx, curl, Go and
//! their own test binaries, and each would otherwise have to be copied in with
//! its whole runtime. The same absolute paths work on both sides, so a test
//! binary built on the host runs in the guest unchanged. The kernel and the
//! initramfs (busybox and the 9p/overlay modules) come from ci/install-vm.sh.
//!
//! Software emulation only: `/dev/kvm` exists on our machines, but a KVM
//! guest hangs right after the kernel is decompressed (nested virtualisation).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bootable guest: the kernel and initramfs ci/install-vm.sh cached.
pub struct Guest {
    dir: PathBuf,
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
        let dir = std::env::var_os("NETTAP_VM").map(PathBuf::from).unwrap_or_else(|| {
            panic!("NETTAP_VM is not set: run `source ci/install.sh` (ci/install-vm.sh fetches the guest kernel)")
        });
        for f in ["vmlinuz", "initrd", "complete"] {
            assert!(dir.join(f).exists(), "{} is missing: ci/install-vm.sh builds it", dir.join(f).display());
        }
        Guest { dir }
    }

    /// The Debian package the kernel came from (`linux-image-6.1.0-…-amd64`).
    pub fn kernel_package(&self) -> String {
        std::fs::read_to_string(self.dir.join("kernel-package")).unwrap_or_default().trim().to_string()
    }

    /// Boots the guest, runs `script` with bash as root in `/mnt/nettap`
    /// (after `export`s of `env`) and powers off. qemu is killed after `timeout`.
    pub fn run(&self, script: &str, env: &[(&str, &str)], timeout: Duration) -> GuestRun {
        let share = tempfile::tempdir().unwrap();
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
            .expect("qemu-system-x86_64 is required for the guest tests: ci/install.sh installs it");
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
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "3072"])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(self.dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(self.dir.join("initrd"))
            // panic=-1 and -no-reboot: a guest that panics ends at once.
            .args(["-append", "console=ttyS0 quiet loglevel=3 panic=-1"])
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

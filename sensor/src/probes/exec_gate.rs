//! Holding a new program at exec until it is probed.
//!
//! Uprobes for a program's own TLS code (Go, OpenSSL linked in) can only be
//! placed once the sensor has read the file, which takes it 10–30 ms after
//! the exec tracepoint fires; a quick client is done by then. fanotify's
//! `FAN_OPEN_EXEC_PERM` stops an exec while the kernel opens the file, before
//! any of the program runs, until a listener answers. The sensor answers
//! every one with "allow": at once for files it has examined before, after
//! examining (and probing) for new ones, and always within the hold limit,
//! so a slow sensor delays a new program by at most that and never stops
//! one. If the sensor dies the kernel allows everything pending.
//!
//! The answering thread touches nothing of the held process (no
//! `/proc/PID`): it only reads events and writes answers, so a sensor busy
//! elsewhere cannot deadlock an exec.

use super::file_id::FileId;
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Held programs waiting for the capture loop; more are let through unexamined.
const QUEUE: usize = 256;
/// Files remembered as examined; forgotten all at once beyond that.
const KNOWN: usize = 65536;

/// Filesystems that hold no programs worth a mark.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "devtmpfs",
    "mqueue",
    "debugfs",
    "tracefs",
    "bpf",
    "securityfs",
    "pstore",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "selinuxfs",
];

/// Why the gate is not there.
#[derive(Debug, thiserror::Error)]
pub enum ExecGateError {
    /// fanotify refused (EPERM without CAP_SYS_ADMIN, or a kernel without permission events).
    #[error("fanotify_init: {0}")]
    Init(std::io::Error),
    /// The answering thread could not start.
    #[error("starting the exec-gate thread: {0}")]
    Thread(std::io::Error),
}

/// A program stopped at exec. Dropping it lets the program go on.
#[derive(Debug)]
pub struct HeldExec {
    /// The executed file, open.
    pub file: File,
    /// The process executing it.
    pub pid: u32,
    /// When the sensor read the event (boot-time ns).
    pub held_at_boot_ns: u64,
    _release: SyncSender<()>,
}

impl HeldExec {
    /// A path that opens the same file from this process.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// The fanotify group and the filesystems marked on it.
#[derive(Debug)]
pub struct ExecGate {
    fan: Arc<OwnedFd>,
    marked: HashSet<u64>,
    held: tokio::sync::mpsc::Receiver<HeldExec>,
    hold: Duration,
}

impl ExecGate {
    /// Starts the gate on every filesystem mounted here that can hold programs.
    pub fn start(hold: Duration) -> Result<ExecGate, ExecGateError> {
        // SAFETY: plain syscall; the fd it returns is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            return Err(ExecGateError::Init(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned to us and nothing else owns it.
        let fan = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, held) = tokio::sync::mpsc::channel(QUEUE);
        let thread_fan = fan.clone();
        std::thread::Builder::new()
            .name("exec-gate".into())
            .spawn(move || answer(&thread_fan, &tx, hold))
            .map_err(ExecGateError::Thread)?;
        let mut gate = ExecGate { fan, marked: HashSet::new(), held, hold };
        for mount in program_mounts() {
            gate.mark(&mount);
        }
        Ok(gate)
    }

    /// How long an exec is held at most.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// How many filesystems are marked.
    pub fn filesystems(&self) -> usize {
        self.marked.len()
    }

    /// Marks the filesystem `path` is on, once per device. Programs of
    /// filesystems mounted after start-up are found from their first exec.
    pub fn mark(&mut self, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if self.marked.contains(&meta.dev()) {
            return;
        }
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return };
        // SAFETY: valid fd and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC_PERM,
                libc::AT_FDCWD,
                c_path.as_ptr(),
            )
        };
        if r == 0 {
            self.marked.insert(meta.dev());
            tracing::debug!(path = %path.display(), "exec gate on filesystem");
        } else {
            let e = std::io::Error::last_os_error();
            tracing::debug!(path = %path.display(), error = %e, "exec gate cannot mark filesystem");
            // Not asked again for this device.
            self.marked.insert(meta.dev());
        }
    }

    /// The next held program.
    pub async fn next(&mut self) -> Option<HeldExec> {
        self.held.recv().await
    }

    /// A held program waiting now, if any: the capture loop takes these
    /// between other pieces of work, so a program is not held while the
    /// loop examines a backlog of programs that already run.
    pub fn try_next(&mut self) -> Option<HeldExec> {
        self.held.try_recv().ok()
    }
}

impl Drop for ExecGate {
    fn drop(&mut self) {
        // No more holds; the thread answers whatever is in flight and then
        // waits on a group with no marks.
        // SAFETY: valid fd; FLUSH takes no path.
        unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_FLUSH | libc::FAN_MARK_FILESYSTEM,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            );
        }
    }
}

/// Mount points of the filesystems in this mount namespace that can hold programs.
fn program_mounts() -> Vec<PathBuf> {
    let infos = procfs::process::Process::myself().and_then(|p| p.mountinfo());
    infos.map(|m| m.into_iter().filter_map(program_mount).collect()).unwrap_or_default()
}

/// The mount point of a mount, unless its filesystem is a pseudo one
/// (procfs keeps mountinfo's octal escapes in the path).
fn program_mount(m: procfs::process::MountInfo) -> Option<PathBuf> {
    (!PSEUDO_FS.contains(&m.fs_type.as_str()))
        .then(|| PathBuf::from(unescape_octal(&m.mount_point.to_string_lossy())))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn allow(fan: &OwnedFd, fd: &OwnedFd) {
    let r = libc::fanotify_response { fd: fd.as_raw_fd(), response: libc::FAN_ALLOW };
    // SAFETY: writes one fanotify_response from a live local.
    let n = unsafe {
        libc::write(
            fan.as_raw_fd(),
            &r as *const libc::fanotify_response as *const libc::c_void,
            std::mem::size_of::<libc::fanotify_response>(),
        )
    };
    if n < 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "exec gate cannot answer");
    }
}

/// The answering thread: reads a batch of events, lets known files through,
/// hands new ones to the capture loop and answers each when it is done or
/// when the hold limit passes, whichever is first.
fn answer(fan: &OwnedFd, tx: &tokio::sync::mpsc::Sender<HeldExec>, hold: Duration) {
    let mut known: HashSet<FileId> = HashSet::new();
    let mut late = 0u64;
    // Aligned for fanotify_event_metadata.
    let mut buf = vec![0u64; 1024];
    loop {
        // SAFETY: reads into a buffer we own, of the given length.
        let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len() * 8) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(error = %e, "exec gate stopped reading; the kernel lets pending programs go");
            return;
        }
        // SAFETY: the kernel wrote `n` bytes of the u64 buffer.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, n as usize) };
        let mut waiting: Vec<(OwnedFd, FileId, Receiver<()>, i32)> = Vec::new();
        for ev in events(bytes) {
            if ev.fd < 0 {
                continue; // queue overflow: nothing to answer
            }
            // SAFETY: the kernel gave this fd to us with the event.
            let fd = unsafe { OwnedFd::from_raw_fd(ev.fd) };
            if ev.mask & libc::FAN_OPEN_EXEC_PERM == 0 {
                continue;
            }
            let Some(key) = identity(&fd) else {
                allow(fan, &fd);
                continue;
            };
            // Known files, and files that are not ELF (a script: the kernel
            // opens its interpreter for exec next, and that one is held),
            // go at once.
            if known.contains(&key) || !is_elf(&fd) {
                allow(fan, &fd);
                continue;
            }
            let (release, released) = sync_channel(1);
            let held = fd.try_clone().map(|f| HeldExec {
                file: File::from(f),
                pid: ev.pid as u32,
                held_at_boot_ns: nettap_core::clock::Clock::boot_now_ns(),
                _release: release,
            });
            match held.map(|h| tx.try_send(h)) {
                Ok(Ok(())) => waiting.push((fd, key, released, ev.pid)),
                _ => allow(fan, &fd), // queue full, capture loop gone, or no fd left
            }
        }
        let read_at = Instant::now();
        let deadline = read_at + hold;
        for (fd, key, released, pid) in waiting {
            let answer = released.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            let held_us = read_at.elapsed().as_micros() as u64;
            tracing::debug!(pid, held_us, "exec gate answers a held program");
            match answer {
                Err(RecvTimeoutError::Timeout) => {
                    late += 1;
                    if late.is_power_of_two() {
                        tracing::warn!(
                            times = late,
                            hold_ms = hold.as_millis() as u64,
                            "a new program was let go before the sensor had examined it"
                        );
                    }
                }
                _ => {
                    if known.len() >= KNOWN {
                        known.clear();
                    }
                    known.insert(key);
                }
            }
            allow(fan, &fd);
        }
    }
}

/// Whether the open file starts with the ELF magic (read at offset 0,
/// leaving the file position alone).
fn is_elf(fd: &OwnedFd) -> bool {
    let mut magic = [0u8; 4];
    // SAFETY: reads at most 4 bytes into a local array.
    let n = unsafe { libc::pread(fd.as_raw_fd(), magic.as_mut_ptr() as *mut libc::c_void, 4, 0) };
    // A file that cannot be read is examined as before.
    n < 0 || magic == *b"\x7fELF"
}

/// (device, inode) of an open file.
/// A new build on a reused inode is a new program (see file_id).
fn identity(fd: &OwnedFd) -> Option<FileId> {
    std::fs::File::from(fd.try_clone().ok()?).metadata().ok().map(|m| FileId::of(&m))
}

/// One event's fields the gate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GateEvent {
    mask: u64,
    fd: i32,
    pid: i32,
}

/// The events in one read; stops at anything malformed.
fn events(mut bytes: &[u8]) -> impl Iterator<Item = GateEvent> + '_ {
    let size = std::mem::size_of::<libc::fanotify_event_metadata>();
    std::iter::from_fn(move || {
        if bytes.len() < size {
            return None;
        }
        // SAFETY: at least `size` bytes; read_unaligned copies them out.
        let m: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const _) };
        let len = m.event_len as usize;
        if m.vers != libc::FANOTIFY_METADATA_VERSION || len < size || len > bytes.len() {
            return None;
        }
        bytes = &bytes[len..];
        Some(GateEvent { mask: m.mask, fd: m.fd, pid: m.pid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_elf_files_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let open = |p: &Path| OwnedFd::from(File::open(p).unwrap());
        let script = dir.path().join("s.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(!is_elf(&open(&script)) && !is_elf(&open(&empty)));
        assert!(is_elf(&open(Path::new("/bin/true"))));
    }

    #[test]
    fn mountinfo_gives_program_filesystems_only() {
        use procfs::FromBufRead;
        let text = "25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
26 25 0:22 / /proc rw,nosuid shared:12 - proc proc rw
90 25 0:40 / /mnt/a\\040b rw shared:40 - tmpfs tmpfs rw
91 25 0:41 / /srv rw shared:41 master:3 - overlay overlay rw
";
        let infos = procfs::process::MountInfos::from_buf_read(text.as_bytes()).unwrap();
        let mounts: Vec<PathBuf> = infos.into_iter().filter_map(program_mount).collect();
        assert_eq!(mounts, ["/", "/mnt/a b", "/srv"].map(PathBuf::from));
        assert!(program_mounts().contains(&PathBuf::from("/")), "this host's root holds programs");
        assert_eq!(unescape_octal("a\\134b\\0"), "a\\b\\0");
    }

    fn metadata(mask: u64, fd: i32, pid: i32, len: u32) -> Vec<u8> {
        let m = libc::fanotify_event_metadata {
            event_len: len,
            vers: libc::FANOTIFY_METADATA_VERSION,
            reserved: 0,
            metadata_len: std::mem::size_of::<libc::fanotify_event_metadata>() as u16,
            mask,
            fd,
            pid,
        };
        // SAFETY: viewing a plain C struct as its bytes.
        let b = unsafe {
            std::slice::from_raw_parts(
                &m as *const _ as *const u8,
                std::mem::size_of::<libc::fanotify_event_metadata>(),
            )
        };
        let mut v = b.to_vec();
        v.resize(len.max(b.len() as u32) as usize, 0);
        v
    }

    #[test]
    fn events_are_read_in_order_and_malformed_ones_end_the_batch() {
        let size = std::mem::size_of::<libc::fanotify_event_metadata>() as u32;
        let mut bytes = metadata(libc::FAN_OPEN_EXEC_PERM, 5, 100, size);
        bytes.extend(metadata(libc::FAN_OPEN_EXEC_PERM, 6, 101, size + 8)); // with an info record
        bytes.extend(metadata(libc::FAN_Q_OVERFLOW, -1, 0, size));
        let got: Vec<GateEvent> = events(&bytes).collect();
        assert_eq!(
            got,
            vec![
                GateEvent { mask: libc::FAN_OPEN_EXEC_PERM, fd: 5, pid: 100 },
                GateEvent { mask: libc::FAN_OPEN_EXEC_PERM, fd: 6, pid: 101 },
                GateEvent { mask: libc::FAN_Q_OVERFLOW, fd: -1, pid: 0 },
            ]
        );
        assert_eq!(events(&bytes[..size as usize - 1]).count(), 0, "short");
        let mut too_long = metadata(libc::FAN_OPEN_EXEC_PERM, 5, 100, size);
        too_long[0] = 200; // event_len beyond the read
        assert_eq!(events(&too_long).count(), 0);
        let mut too_short = metadata(libc::FAN_OPEN_EXEC_PERM, 5, 100, size);
        too_short[0] = 4;
        assert_eq!(events(&too_short).count(), 0);
    }
}

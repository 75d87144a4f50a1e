//! The agent route that needs no path, no name and no shared directory:
//! the agent makes a Unix socket pair inside the JVM and names its sending
//! thread `nettap-fd-<N>` (N: the pair's other end); the sensor finds that
//! thread, copies fd N out of the process with `pidfd_getfd` (CAP_SYS_PTRACE,
//! which the sensor has anyway) and writes one byte, [`READY`]; the agent
//! then closes its copy of that end, so the sensor's copy is the only one.
//!
//! Why not an abstract socket bound in each pod's network namespace: binding
//! there needs `setns`, which needs CAP_SYS_ADMIN (measured: refused with the
//! DaemonSet's four capabilities), and a name can be squatted by another
//! container of the pod. Here nothing is bound anywhere: no other process can
//! reach the sensor's end, and the pid is the one the sensor took the socket
//! from (its own, host pid namespace), whatever the pod's pid namespace says.
//!
//! Discovery: a full scan of `/proc/*/task/*/comm` at start and every
//! [`SCAN_EVERY`]; a process executed with the agent in its command line or
//! environment (`-agentpath:…libnettap_agent…`, as the injector sets it) is
//! looked at every 50 ms for its first 10 s, then every second up to 30 s.

use super::listener::read_agent;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// The prefix of the agent thread's name while it offers a socket.
pub const THREAD_PREFIX: &str = "nettap-fd-";
/// The one byte the sensor writes once it holds the socket.
pub const READY: u8 = 1;
/// What marks a process started with the agent (command line or environment).
const MARK: &[u8] = b"nettap_agent";
/// The safety-net scan of every thread on the host (cost in docs/benchmarks.md).
const SCAN_EVERY: Duration = Duration::from_secs(10);
/// Extra scans after start: an agent whose previous sensor died offers a new
/// socket within half a second of noticing.
const EARLY_SCANS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// How long a new process with the agent is looked at every 50 ms.
/// A JVM on a loaded node can take several seconds to offer its socket, and a
/// short-lived one (a `kubectl exec`'d client) is done within a second of
/// that: watched closely for 10 s (measured on the real node: 2 s missed
/// one client in three).
const FAST_WATCH: Duration = Duration::from_secs(10);
/// How long a new process with the agent is watched.
const WATCH_FOR: Duration = Duration::from_secs(30);
/// Processes watched at once; more are left to the periodic scan.
const MAX_WATCHED: usize = 4096;
/// Agents served at once.
const MAX_AGENTS: usize = 4096;

/// Why a process's offered socket was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// pidfd_open or pidfd_getfd failed (process gone, no CAP_SYS_PTRACE, old kernel).
    #[error("cannot copy fd {fd} out of pid {pid}")]
    Copy {
        /// The process.
        pid: u32,
        /// Its fd.
        fd: RawFd,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The fd is not one end of a Unix stream socket pair the process made.
    #[error("fd {fd} of pid {pid} is not the agent's socket: {why}")]
    NotAgentSocket {
        /// The process.
        pid: u32,
        /// Its fd.
        fd: RawFd,
        /// What is wrong.
        why: &'static str,
    },
    /// The go-ahead byte could not be written.
    #[error("cannot signal pid {pid}")]
    Ready {
        /// The process.
        pid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The fd a process offers: from a thread named `nettap-fd-<N>`.
pub fn offered_fd(pid: u32) -> Option<RawFd> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let mut path = task.path();
        path.push("comm");
        let Ok(comm) = std::fs::read(&path) else { continue };
        if let Some(fd) = parse_comm(&comm) {
            return Some(fd);
        }
    }
    None
}

fn parse_comm(comm: &[u8]) -> Option<RawFd> {
    let comm = comm.strip_suffix(b"\n").unwrap_or(comm);
    let n = comm.strip_prefix(THREAD_PREFIX.as_bytes())?;
    std::str::from_utf8(n).ok()?.parse().ok().filter(|fd| *fd >= 0)
}

fn last_error<T>(ret: libc::c_long, ok: impl FnOnce(libc::c_long) -> T) -> std::io::Result<T> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ok(ret))
    }
}

fn sockopt(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for the call.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len) };
    last_error(r.into(), |_| v)
}

fn peer_pid(fd: RawFd) -> std::io::Result<i32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    last_error(r.into(), |_| cred.pid)
}

/// Copies `fd` out of `pid`, checks that it is one end of a Unix stream
/// socket pair that process made, and writes [`READY`] to it.
pub fn take(pid: u32, fd: RawFd) -> Result<OwnedFd, TakeError> {
    let copy = |source| TakeError::Copy { pid, fd, source };
    // SAFETY: plain system calls; the returned fds are owned at once.
    let pidfd =
        last_error(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) }, |f| unsafe {
            OwnedFd::from_raw_fd(f as RawFd)
        })
        .map_err(copy)?;
    let ours =
        last_error(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) }, |f| unsafe {
            OwnedFd::from_raw_fd(f as RawFd)
        })
        .map_err(copy)?;
    let not = |why| TakeError::NotAgentSocket { pid, fd, why };
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `ours` is open; st is valid.
    if unsafe { libc::fstat(ours.as_raw_fd(), &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(not("not a socket"));
    }
    if sockopt(ours.as_raw_fd(), libc::SO_DOMAIN).ok() != Some(libc::AF_UNIX)
        || sockopt(ours.as_raw_fd(), libc::SO_TYPE).ok() != Some(libc::SOCK_STREAM)
    {
        return Err(not("not a Unix stream socket"));
    }
    // A pair's peer credentials are its maker's (in our pid namespace): a
    // socket connected to somebody else is not the agent's.
    if peer_pid(ours.as_raw_fd()).ok() != Some(pid as i32) {
        return Err(not("its peer is another process"));
    }
    // SAFETY: one byte from a valid buffer; never blocks, never raises SIGPIPE.
    let sent = unsafe {
        libc::send(ours.as_raw_fd(), [READY].as_ptr().cast(), 1, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if sent != 1 {
        return Err(TakeError::Ready { pid, source: std::io::Error::last_os_error() });
    }
    Ok(ours)
}

/// Whether `pid` was started with the agent (its command line or environment names it).
fn started_with_agent(pid: u32) -> bool {
    let marked = |b: &[u8]| b.windows(MARK.len()).any(|w| w == MARK);
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|b| marked(&b))
        || environ(pid).is_some_and(|b| marked(&b))
}

/// The most of a process's environment looked at.
const MAX_ENVIRON: usize = 256 << 10;

/// The environment `pid` was started with. /proc/PID/environ is its
/// owner's alone (0400): the sensor, uid 0 without CAP_DAC_OVERRIDE, cannot
/// open it for a process of another user (a pod running as uid 1000), so
/// then it is read from the process's memory (`process_vm_readv`, which
/// CAP_SYS_PTRACE allows) between `env_start` and `env_end` of /proc/PID/stat.
fn environ(pid: u32) -> Option<Vec<u8>> {
    if let Ok(b) = std::fs::read(format!("/proc/{pid}/environ")) {
        return Some(b);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (start, end) = env_range(&stat)?;
    let mut buf = vec![0u8; end.checked_sub(start)?.min(MAX_ENVIRON)];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: start as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` is our own buffer of its length; the remote range is
    // only read by the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    buf.truncate(usize::try_from(n).ok()?);
    Some(buf)
}

/// `env_start` and `env_end` (fields 50 and 51) of a /proc/PID/stat line.
fn env_range(stat: &str) -> Option<(usize, usize)> {
    // Fields from the third on follow the command name's closing parenthesis.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(50 - 3);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Every process with a thread offering a socket, and what the scan cost.
fn scan() -> (Vec<(u32, RawFd)>, usize, Duration) {
    let started = Instant::now();
    let mut found = Vec::new();
    let mut processes = 0;
    for pid in crate::probes::running_pids() {
        processes += 1;
        if let Some(fd) = offered_fd(pid) {
            found.push((pid, fd));
        }
    }
    (found, processes, started.elapsed())
}

/// The discovery thread's handle; dropping it stops the thread.
#[derive(Debug)]
pub struct Handoff {
    notes: std::sync::mpsc::SyncSender<Note>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handoff {
    /// A process was executed: it is watched if it carries the agent.
    pub fn on_exec(&self, pid: u32) {
        let _ = self.notes.try_send(Note::Exec(pid));
    }

    /// A handle other threads can tell about agents they loaded.
    pub fn watcher(&self) -> Watcher {
        Watcher(self.notes.clone())
    }
}

/// Tells the discovery thread to look at a process now (from any thread).
#[derive(Debug, Clone)]
pub struct Watcher(std::sync::mpsc::SyncSender<Note>);

impl Watcher {
    /// The agent was just loaded into `pid`.
    pub fn watch(&self, pid: u32) {
        let _ = self.0.try_send(Note::Watch(pid));
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let _ = self.notes.send(Note::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the discovery thread is told.
#[derive(Debug)]
enum Note {
    /// A program was executed.
    Exec(u32),
    /// An agent's connection ended.
    Ended(u32),
    /// An agent was loaded into a running process.
    Watch(u32),
    /// The sensor is ending.
    Stop,
}

struct Discovery {
    rt: tokio::runtime::Handle,
    tx: mpsc::Sender<super::AgentMsgs>,
    active: Arc<Mutex<HashSet<u32>>>,
    ended: std::sync::mpsc::SyncSender<Note>,
    /// pid → (first seen, next look).
    watched: HashMap<u32, (Instant, Instant)>,
}

/// Starts discovering agents; their frames go to `tx`. Must run inside a Tokio runtime.
pub fn start(tx: mpsc::Sender<super::AgentMsgs>) -> std::io::Result<Handoff> {
    let (notes, rx) = std::sync::mpsc::sync_channel(4096);
    let mut d = Discovery {
        rt: tokio::runtime::Handle::current(),
        tx,
        active: Default::default(),
        ended: notes.clone(),
        watched: HashMap::new(),
    };
    let thread = std::thread::Builder::new().name("agent-handoff".into()).spawn(move || d.run(rx))?;
    Ok(Handoff { notes, thread: Some(thread) })
}

impl Discovery {
    fn run(&mut self, rx: std::sync::mpsc::Receiver<Note>) {
        let start = Instant::now();
        let mut early: std::collections::VecDeque<Instant> = EARLY_SCANS.iter().map(|d| start + *d).collect();
        let mut next_scan = start;
        loop {
            let now = Instant::now();
            if now >= next_scan {
                let (found, processes, took) = scan();
                debug!(processes, took_us = took.as_micros() as u64, offers = found.len(), "agent scan");
                for (pid, fd) in found {
                    self.offer(pid, fd);
                }
                next_scan = early.pop_front().unwrap_or(now + SCAN_EVERY);
            }
            self.look_at_watched(now);
            let due = self.watched.values().map(|w| w.1).chain([next_scan]).min().unwrap_or(next_scan);
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(Note::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Note::Exec(pid)) if started_with_agent(pid) => self.watch(pid, Duration::ZERO),
                Ok(Note::Watch(pid)) => self.watch(pid, Duration::ZERO),
                // A living agent offers a new socket: looked at once a second,
                // so one that keeps sending bad frames costs little.
                Ok(Note::Ended(pid)) => self.watch(pid, FAST_WATCH),
                Ok(Note::Exec(_)) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Watches `pid` as if first seen `age` ago.
    fn watch(&mut self, pid: u32, age: Duration) {
        if self.watched.len() < MAX_WATCHED {
            let now = Instant::now();
            let due = if age.is_zero() { now } else { now + Duration::from_secs(1) };
            self.watched.entry(pid).or_insert((now - age, due));
        }
    }

    fn look_at_watched(&mut self, now: Instant) {
        let due: Vec<u32> = self.watched.iter().filter(|(_, w)| w.1 <= now).map(|(p, _)| *p).collect();
        for pid in due {
            let (since, _) = self.watched[&pid];
            let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
            let taken = match offered_fd(pid) {
                Some(fd) => self.offer(pid, fd),
                None => false,
            };
            let age = now - since;
            if gone || taken || age > WATCH_FOR {
                self.watched.remove(&pid);
            } else {
                let step = if age < FAST_WATCH { Duration::from_millis(50) } else { Duration::from_secs(1) };
                self.watched.insert(pid, (since, now + step));
            }
        }
    }

    /// Takes `pid`'s offered socket unless it is served already; true if taken.
    fn offer(&mut self, pid: u32, fd: RawFd) -> bool {
        {
            let mut active = self.active.lock().unwrap();
            if active.contains(&pid) {
                return false;
            }
            if active.len() >= MAX_AGENTS {
                warn!(pid, "agent not served: {MAX_AGENTS} agents are served already");
                return false;
            }
            active.insert(pid);
        }
        let owned = match take(pid, fd) {
            Ok(owned) => owned,
            Err(e) => {
                warn!(pid, error = %crate::probes::error_chain(&e), "agent socket not taken");
                self.active.lock().unwrap().remove(&pid);
                return false;
            }
        };
        let std_stream = std::os::unix::net::UnixStream::from(owned);
        let stream = {
            let _in_runtime = self.rt.enter();
            std_stream.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(std_stream))
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(pid, error = %e, "agent socket not served");
                self.active.lock().unwrap().remove(&pid);
                return false;
            }
        };
        info!(pid, fd, "agent socket taken from the process");
        let (tx, active, ended) = (self.tx.clone(), self.active.clone(), self.ended.clone());
        self.rt.spawn(async move {
            read_agent(stream, pid, tx).await;
            active.lock().unwrap().remove(&pid);
            let _ = ended.try_send(Note::Ended(pid));
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_read_from_memory_too() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let (start, end) = env_range(&stat).expect("env_start and env_end");
        assert!(start > 0 && end > start, "{start} {end}");
        // The same bytes as /proc/PID/environ, through process_vm_readv.
        let mut buf = vec![0u8; end - start];
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: start as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: as in `environ`.
        let n = unsafe { libc::process_vm_readv(me as libc::pid_t, &local, 1, &remote, 1, 0) };
        assert_eq!(n as usize, buf.len());
        assert_eq!(buf, std::fs::read(format!("/proc/{me}/environ")).unwrap());
        // A command name with spaces and parentheses does not shift the fields.
        let odd = stat.replacen('(', "(a) b (", 1);
        assert_eq!(env_range(&odd), Some((start, end)));
    }

    #[test]
    fn thread_names_give_the_fd() {
        assert_eq!(parse_comm(b"nettap-fd-7\n"), Some(7));
        assert_eq!(parse_comm(b"nettap-fd-12345"), Some(12345));
        assert_eq!(parse_comm(b"nettap-fd-\n"), None);
        assert_eq!(parse_comm(b"nettap-fd--1\n"), None);
        assert_eq!(parse_comm(b"nettap-agent\n"), None);
        assert_eq!(parse_comm(b"java\n"), None);
    }

    /// A pair made here, offered by a thread of this process: taken, the
    /// go-ahead arrives, and frames written on our end reach the taken copy.
    #[test]
    fn an_offered_pair_is_taken_and_a_plain_file_is_refused() {
        use std::io::{Read, Write};
        let (mut mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let me = std::process::id();
        let taken = take(me, theirs.as_raw_fd()).unwrap();
        let mut go = [0u8; 1];
        mine.read_exact(&mut go).unwrap();
        assert_eq!(go, [READY]);
        drop(theirs);
        mine.write_all(b"frame").unwrap();
        let mut got = [0u8; 5];
        std::os::unix::net::UnixStream::from(taken).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"frame");

        let file = tempfile::tempfile().unwrap();
        let err = take(me, file.as_raw_fd()).unwrap_err();
        assert!(matches!(err, TakeError::NotAgentSocket { why: "not a socket", .. }), "{err}");
        let (_a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let err = take(me, b.as_raw_fd()).unwrap_err();
        assert!(matches!(err, TakeError::NotAgentSocket { .. }), "{err}");
    }
}

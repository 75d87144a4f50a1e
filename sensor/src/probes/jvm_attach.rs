//! `nettap attach PID`: loads the JVM agent into a running HotSpot JVM
//! through its attach mechanism. The JVM starts its attach listener when it
//! gets SIGQUIT while a `.attach_pid<PID>` file exists in its working or
//! temporary directory; the listener is a Unix socket `.java_pid<PID>` in
//! its temporary directory, where the `load` command takes the agent's path.
//! Paths go through `/proc/PID/root` and the pid is the JVM's own (in its pid
//! namespace), so a JVM in a container is reached the same way.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why an attach failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No such process, or not readable.
    #[error("process {pid} cannot be examined")]
    NoProcess {
        /// The pid.
        pid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The JVM did not open its attach socket.
    #[error("the JVM did not start its attach listener within {0:?} (not a HotSpot JVM, or started with -XX:+DisableAttachMechanism)")]
    NoListener(Duration),
    /// Talking to the attach socket failed.
    #[error("attach socket {path}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent library could not be put where the JVM can read it.
    #[error("cannot copy the agent into the JVM's file system at {path}")]
    Copy {
        /// Destination.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The JVM answered with an error.
    #[error("the JVM refused to load the agent: {0}")]
    Refused(String),
}

/// The pid of `pid` inside its own pid namespace (the last `NSpid` entry).
fn ns_pid(pid: u32) -> Result<u32, AttachError> {
    let status = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .map_err(|e| AttachError::NoProcess { pid, source: std::io::Error::other(e) })?;
    Ok(status.nspid.and_then(|ns| ns.last().copied()).map_or(pid, |p| p as u32))
}

/// Loads the agent at `agent` into JVM `pid` with `options`; returns the
/// JVM's answer.
pub fn attach(pid: u32, agent: &Path, options: &str, wait: Duration) -> Result<String, AttachError> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let nspid = ns_pid(pid)?;
    let tmp = root.join("tmp");
    let socket = tmp.join(format!(".java_pid{nspid}"));
    if !socket.exists() {
        start_listener(pid, nspid, &root, &socket, wait)?;
    }
    let agent_in_jvm = agent_path_for(pid, agent, &tmp)?;
    let mut s = UnixStream::connect(&socket)
        .map_err(|source| AttachError::Socket { path: socket.clone(), source })?;
    let io = |source| AttachError::Socket { path: socket.clone(), source };
    s.set_read_timeout(Some(wait)).map_err(io)?;
    // Protocol 1: version, command, three arguments, each NUL-terminated;
    // `load` takes the library, "true" for an absolute path, and its options.
    let mut req = Vec::new();
    for part in ["1", "load", &agent_in_jvm.display().to_string(), "true", options] {
        req.extend_from_slice(part.as_bytes());
        req.push(0);
    }
    s.write_all(&req).map_err(io)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(io)?;
    // "<status>\n<output>": status 0 is success, and `load` then reports
    // the agent's own return code.
    let mut lines = answer.lines();
    let status = lines.next().unwrap_or("").trim();
    let rest: Vec<&str> = lines.collect();
    let rest = rest.join(" ");
    let agent_failed = rest.contains("return code:") && !rest.contains("return code: 0");
    if status != "0" || agent_failed {
        return Err(AttachError::Refused(answer.trim().to_string()));
    }
    Ok(answer.trim().to_string())
}

/// SIGQUIT with `.attach_pid<nspid>` present, then wait for the socket.
fn start_listener(
    pid: u32,
    nspid: u32,
    root: &Path,
    socket: &Path,
    wait: Duration,
) -> Result<(), AttachError> {
    // HotSpot looks in the working directory first, then the temporary one.
    let cwd_file = PathBuf::from(format!("/proc/{pid}/cwd/.attach_pid{nspid}"));
    let tmp_file = root.join(format!("tmp/.attach_pid{nspid}"));
    let file = if std::fs::write(&cwd_file, b"").is_ok() { cwd_file } else { tmp_file };
    std::fs::write(&file, b"").map_err(|source| AttachError::Socket { path: file.clone(), source })?;
    // SAFETY: sending a signal; the JVM's handler starts the attach listener.
    unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
    let start = Instant::now();
    let found = loop {
        if socket.exists() {
            break true;
        }
        if start.elapsed() > wait {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&file);
    if found {
        Ok(())
    } else {
        Err(AttachError::NoListener(wait))
    }
}

/// The agent's path as the JVM sees it: the same file when the JVM shares
/// this root, else a copy in the JVM's /tmp.
fn agent_path_for(pid: u32, agent: &Path, tmp: &Path) -> Result<PathBuf, AttachError> {
    let same_root = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    if same_root(&format!("/proc/{pid}/root")) == same_root("/") {
        return Ok(agent.to_path_buf());
    }
    let dest = tmp.join("libnettap_agent.so");
    std::fs::copy(agent, &dest).map_err(|source| AttachError::Copy { path: dest.clone(), source })?;
    Ok(PathBuf::from("/tmp/libnettap_agent.so"))
}

/// Whether `pid` runs a HotSpot JVM (it has libjvm.so mapped): only such a
/// process is sent SIGQUIT, whose default action would end any other.
pub fn is_jvm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("/libjvm.so"))
}

/// The sensor attaching the agent to JVMs by itself (`capture --attach-jvms`):
/// those running at start, and each program named `java` executed later,
/// once its VM is up. Each attach runs on its own thread: the capture loop
/// never waits for a JVM.
#[derive(Debug)]
pub struct AutoAttach {
    agent: PathBuf,
    options: String,
    tried: std::collections::HashSet<u32>,
    handoff: Option<crate::agent::Watcher>,
}

/// How long after its exec a JVM is first tried, and how often again.
const AFTER_EXEC: Duration = Duration::from_millis(1500);
const TRIES: u32 = 5;

impl AutoAttach {
    /// Attaches `agent`, told the agent socket `socket` if given (else it
    /// offers its socket, and `handoff` is told to look for it).
    pub fn new(agent: PathBuf, socket: Option<&Path>, handoff: Option<crate::agent::Watcher>) -> AutoAttach {
        let options = socket.map(|s| format!("socket={}", s.display())).unwrap_or_default();
        AutoAttach { agent, options, tried: Default::default(), handoff }
    }

    /// Every JVM running now.
    pub fn running(&mut self) {
        let me = std::process::id();
        for pid in super::running_pids() {
            if pid != me && is_jvm(pid) {
                self.spawn(pid, Duration::ZERO);
            }
        }
    }

    /// A program was executed (`comm`, NUL-padded): if it is `java`, attach once it is up.
    pub fn on_exec(&mut self, pid: u32, comm: &[u8]) {
        if comm.split(|&b| b == 0).next() == Some(b"java") {
            self.spawn(pid, AFTER_EXEC);
        }
    }

    /// Process `pid` ended: a later process with its pid is a new one.
    pub fn on_exit(&mut self, pid: u32) {
        self.tried.remove(&pid);
    }

    /// Processes tried (live ones, or at most 65 536).
    pub fn tried(&self) -> usize {
        self.tried.len()
    }

    fn spawn(&mut self, pid: u32, delay: Duration) {
        if self.tried.len() > 65536 {
            self.tried.clear();
        }
        if !self.tried.insert(pid) {
            return;
        }
        let (agent, options, handoff) = (self.agent.clone(), self.options.clone(), self.handoff.clone());
        let spawned = std::thread::Builder::new().name(format!("attach-{pid}")).spawn(move || {
            std::thread::sleep(delay);
            let mut last = None;
            for _ in 0..TRIES {
                if !is_jvm(pid) {
                    // Not (yet) a JVM: gone, or still starting.
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                match attach(pid, &agent, &options, Duration::from_secs(5)) {
                    Ok(_) => {
                        // The agent's hello logs `probe attached`.
                        if let Some(h) = &handoff {
                            h.watch(pid);
                        }
                        return;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            if let Some(e) = last {
                crate::metrics::global().probe_failed("JVMTI", "jvm", "attach");
                tracing::warn!(pid, probe_type = "JVMTI", ok = false, error = %e, "probe attached: failed");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(pid, error = %e, "cannot start a thread to attach to a JVM");
        }
    }
}

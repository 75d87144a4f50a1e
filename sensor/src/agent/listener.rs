//! The agent socket: a Unix socket where in-process agents (the JVM agent)
//! connect and stream frames. Each connection gets its own reader task; its
//! process is the socket's peer (SO_PEERCRED), whatever its frames say. A
//! bad frame closes that one connection, with the reason logged.

use super::AgentMsgs;
use nettap_core::agent::{AgentEvent, AgentMsg, FrameReader};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The agent socket path when none is configured.
pub const DEFAULT_SOCKET: &str = "/run/nettap/agent.sock";

/// Reads (each [`READ_BYTES`] of frames or a little more) waiting for the capture loop,
/// across all agents: when full, readers stop reading, the agents' own
/// queues fill, and the agents count the drops.
const CHANNEL_READS: usize = 256;
/// The room made for each read from an agent.
const READ_BYTES: usize = 64 << 10;

/// Why the agent socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Its directory could not be made.
    #[error("cannot create {dir}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another user could replace the socket (and so receive every JVM's
    /// plaintext, or pose as the sensor): its directory must be writable only
    /// by the sensor's user.
    #[error(
        "{dir} is writable by others (mode {mode:o}, owner uid {uid}): another process could replace \
         the agent socket; make it owned by uid {euid} and not group/world-writable (chmod 755), \
         or choose another --agent-socket"
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// The sensor's effective uid.
        euid: u32,
    },
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// bind() failed.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A served agent socket; its file is removed on drop if it is still ours.
#[derive(Debug)]
pub struct AgentSocket {
    path: PathBuf,
    ino: u64,
    task: tokio::task::JoinHandle<()>,
}

impl AgentSocket {
    /// Removes the socket's file (no new agent connects); the connected
    /// agents keep sending until drop.
    pub fn unlink(&self) {
        // Another sensor may have taken the path since: leave its socket alone.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        self.unlink();
    }
}

/// Listens on `path` (replacing a stale socket file) and returns the socket
/// and the receiving end of the agents' frames. Must run inside a Tokio runtime.
pub fn listen(path: &Path) -> Result<(AgentSocket, mpsc::Receiver<AgentMsgs>), ListenError> {
    let (tx, rx) = channel();
    Ok((listen_to(path, tx)?, rx))
}

/// The channel every agent route feeds.
pub(super) fn channel() -> (mpsc::Sender<AgentMsgs>, mpsc::Receiver<AgentMsgs>) {
    mpsc::channel(CHANNEL_READS)
}

/// [`listen`], its agents' frames sent to `tx`.
pub(super) fn listen_to(path: &Path, tx: mpsc::Sender<AgentMsgs>) -> Result<AgentSocket, ListenError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        let made = |source| ListenError::Dir { dir: dir.into(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(made)?;
        // Exactly 0755 whatever the umask: JVMs of every user must reach the socket.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(made)?;
    }
    let meta = std::fs::metadata(dir).map_err(|source| ListenError::Dir { dir: dir.into(), source })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.mode() & 0o022 != 0 || (meta.uid() != euid && meta.uid() != 0) {
        return Err(ListenError::UnsafeDir {
            dir: dir.into(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            euid,
        });
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(ListenError::NotASocket(path.into())),
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(path).map_err(|source| ListenError::Bind { path: path.into(), source })?;
    // JVMs of any user connect; what they send is tied to their own pid.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    let ino = std::fs::symlink_metadata(path).map(|m| m.ino()).unwrap_or(0);
    let task = tokio::spawn(accept_loop(listener, tx));
    Ok(AgentSocket { path: path.into(), ino, task })
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<AgentMsgs>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let pid = match stream.peer_cred().map(|c| c.pid()) {
                    Ok(Some(pid)) if pid > 0 => pid as u32,
                    _ => {
                        warn!("agent connection without a peer pid: closed");
                        continue;
                    }
                };
                tokio::spawn(read_agent(stream, pid, tx.clone()));
            }
            Err(e) => {
                warn!(error = %e, "accepting an agent connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one agent's frames until it disconnects or sends a bad one.
pub(super) async fn read_agent(mut stream: UnixStream, pid: u32, tx: mpsc::Sender<AgentMsgs>) {
    let mut reader = FrameReader::new();
    loop {
        // Read straight into the reader's buffer (frames are split off it),
        // into its free room: at least READ_BYTES, more after a large frame.
        let buf = reader.buffer();
        buf.reserve(READ_BYTES);
        match stream.read_buf(buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                warn!(pid, error = %e, "agent connection failed");
                return;
            }
        }
        let mut frames = Vec::new();
        let bad = loop {
            match reader.next_frame() {
                Ok(None) => break None,
                Ok(Some(frame)) => {
                    if let AgentEvent::Hello { runtime, version, agent_version, attached_late } = &frame.event
                    {
                        let jvm = format!("{runtime} {version}");
                        crate::metrics::global().probe_attached("JVMTI", "jvm", Some(&jvm));
                        info!(
                            pid,
                            target = format!("pid {pid}"),
                            probe_type = "JVMTI",
                            probe = "javax.net.ssl (SSLSocket, SSLEngine)",
                            version = jvm,
                            agent_version = agent_version.as_str(),
                            attached_late,
                            ok = true,
                            "probe attached"
                        );
                    }
                    frames.push(AgentMsg { pid, frame });
                }
                Err(e) => break Some(e),
            }
        };
        // The good frames before a bad one still count.
        if !frames.is_empty() && tx.send(frames).await.is_err() {
            return; // capture is ending
        }
        if let Some(e) = bad {
            warn!(pid, reason = %e, "agent connection closed: bad frame");
            return;
        }
    }
    match reader.finish() {
        Ok(()) => info!(pid, "agent disconnected"),
        Err(e) => warn!(pid, reason = %e, "agent connection closed: bad frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_directory_is_made_writable_by_the_sensor_alone() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("run/nettap/agent.sock");
        let (_socket, _rx) = listen(&path).unwrap();
        let dir = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o755);
        let sock = std::fs::metadata(&path).unwrap();
        assert!(sock.file_type().is_socket());
        assert_eq!(sock.mode() & 0o777, 0o666, "JVMs of any user connect");
    }

    #[tokio::test]
    async fn a_directory_others_can_write_is_refused_with_the_fix() {
        let scratch = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o1777, 0o775] {
            let dir = scratch.path().join(format!("d{mode:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = listen(&dir.join("agent.sock")).unwrap_err();
            assert!(matches!(err, ListenError::UnsafeDir { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("writable by others") && text.contains("chmod 755"), "{text}");
            assert!(!dir.join("agent.sock").exists(), "nothing is served there");
        }
    }

    #[tokio::test]
    async fn a_directory_of_another_user_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = listen(&dir.join("agent.sock")).unwrap_err();
        assert!(matches!(err, ListenError::UnsafeDir { uid: 65534, .. }), "{err}");
    }
}

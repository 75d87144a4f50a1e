//! Real database servers from Debian's packages, run by the test in a
//! scratch directory on loopback, stopped on drop.

use crate::peers::{KillOnDrop, SpawnGuarded};
use crate::wait::TIMEOUT;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until `port` on 127.0.0.1 accepts connections while `alive` says
/// the server still runs.
fn wait_listening(port: u16, what: &str, mut alive: impl FnMut() -> bool) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(alive(), "{what} exited before it listened on {port}");
        assert!(start.elapsed() < TIMEOUT, "{what} did not listen on {port} within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's `redis-server` on 127.0.0.1:`port`, no persistence, with a password.
pub struct RedisServer {
    /// The server process.
    pub child: KillOnDrop,
    /// Its working directory.
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts it and waits until it listens.
    pub fn start(port: u16, password: &str) -> RedisServer {
        assert!(
            Path::new("/usr/bin/redis-server").exists(),
            "redis-server is required (ci/install.sh installs Debian's redis-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", password, "--daemonize", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn_guarded();
        wait_listening(port, "redis-server", || child.try_wait().unwrap().is_none());
        RedisServer { child, dir }
    }

    /// The server's pid (it serves every connection itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

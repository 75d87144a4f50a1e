//! Bounded waits and free ports: no test waits forever or collides on a port.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bound on how long any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A port no one listens on, for a test's server: below the ephemeral range
/// (32768+, where role inference expects clients), distinct per process and
/// per call, and checked free on every IPv4 address of the host (a server of
/// the node test listening on one address only once made a test's
/// 0.0.0.0 server die at start: free on loopback is not enough).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20000 + (std::process::id() % 1000) * 12;
    loop {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) as u16;
        let free = |ip: &str| std::net::TcpListener::bind((ip, port)).is_ok();
        if port < 32768 && free("0.0.0.0") {
            return port;
        }
    }
}

/// Waits until `path` exists; panics after TIMEOUT or if `alive` says the waiter died.
pub fn wait_for_file(path: &Path, mut alive: impl FnMut() -> bool) {
    let start = Instant::now();
    while !path.exists() {
        assert!(alive(), "process died before {} appeared", path.display());
        assert!(start.elapsed() < TIMEOUT, "{} did not appear in {TIMEOUT:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a bound; kills it on timeout.
pub fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    free_port_from(20000, 32768)
}

/// A free port inside the kernel's ephemeral range (45000..57000), for tests
/// whose roles must not be told apart by port numbers alone.
pub fn free_ephemeral_port() -> u16 {
    free_port_from(45000, 57000)
}

/// Ports are spread by pid so concurrent test binaries rarely meet, and each
/// is checked free where it will be used: bound on 0.0.0.0, nobody listening
/// or connected from it.
fn free_port_from(low: u32, high: u32) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = high - low;
    let base = (std::process::id() % 1000) * 12;
    loop {
        let port = (low + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
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

//! Forty threads blocked in recv at once (a thread-per-connection server's
//! idle keep-alive connections), then each gets its message: every message
//! must be captured on its own connection. A kretprobe holds one instance per
//! call in flight and the kernel gives it only max(10, 2 × CPUs) of them, so a
//! kprobe path built on kretprobes loses the rest without a trace.

use nettap_e2e::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const READERS: usize = 40;

#[test]
fn every_reader_blocked_at_the_same_time_is_captured() {
    let port = free_port();
    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s]);
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/blocked_readers.py");
    let out = Command::new(python())
        .arg(program)
        .args(["--port", &port_s, "--count", &READERS.to_string(), "--size", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "blocked_readers.py: {}", String::from_utf8_lossy(&out.stderr));
    let cap = sensor.stop();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = report["pid"].as_u64().unwrap() as u32;

    // What each client connection received, by its local port, in stream order.
    let mut recv: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for r in cap.of("data", pid).into_iter().filter(|r| r["direction"] == "recv") {
        let local = r["conn"]["local"].as_str().unwrap().to_string();
        recv.entry(local).or_default().push((r["seq"].as_u64().unwrap(), payload(r)));
    }
    let mut missing = Vec::new();
    for conn in report["conns"].as_array().unwrap() {
        let local = format!("127.0.0.1:{}", conn[0]);
        let want = conn[1].as_str().unwrap().as_bytes();
        let mut chunks = recv.remove(&local).unwrap_or_default();
        chunks.sort();
        let got: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
        if got != want {
            missing.push(format!("{local}: {} of {} bytes", got.len(), want.len()));
        }
    }
    assert!(missing.is_empty(), "{} of {READERS} readers not captured exactly: {missing:?}", missing.len());
}

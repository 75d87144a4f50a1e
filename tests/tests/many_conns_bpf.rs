//! A busy node (issue 27): thousands of loopback connections held open at
//! once, more sockets than the kernel's connection table holds, two small
//! exchanges on each. Every open and close is reported exactly once with
//! its role, every byte at its offset, never a false `midstream`; a
//! connection table that overflows says so in a `drop` record.

use nettap_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// What `programs/many_conns.py` reports.
struct Peers {
    client_pid: u32,
    server_pid: u32,
    /// Client port of connection i.
    ports: Vec<u16>,
}

fn run_peers(count: usize, port: u16) -> Peers {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peers.json");
    let mut child = Command::new(python())
        .arg(program("many_conns.py"))
        .args(["--count", &count.to_string(), "--port", &port.to_string()])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start many_conns.py");
    let status = wait_child(&mut child, "many_conns.py");
    assert!(status.success(), "many_conns.py failed: {status}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    Peers {
        client_pid: v["client_pid"].as_u64().unwrap() as u32,
        server_pid: v["server_pid"].as_u64().unwrap() as u32,
        ports: v["ports"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u16).collect(),
    }
}

fn msg(word: &str, i: usize) -> Vec<u8> {
    format!("{word}-{i:06}\n").into_bytes()
}

fn port_of(addr: &Value) -> u16 {
    addr.as_str().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok()).unwrap()
}

/// One side of one connection as the records tell it.
#[derive(Default)]
struct Side {
    events: Vec<(String, String)>,
    /// By direction: (seq, bytes) chunks.
    data: HashMap<String, Vec<(u64, Vec<u8>)>>,
}

impl Side {
    /// The bytes of `direction` in seq order, with a `<gap>` or `<overlap>`
    /// marker where the offsets do not follow each other.
    fn bytes(&mut self, direction: &str) -> Vec<u8> {
        let chunks = self.data.entry(direction.to_string()).or_default();
        chunks.sort_by_key(|(seq, _)| *seq);
        let mut out = Vec::new();
        let mut next = 0;
        for (seq, b) in chunks.iter() {
            if *seq != next {
                out.extend_from_slice(if *seq > next { b"<gap>" } else { b"<overlap>" });
            }
            out.extend_from_slice(b);
            next = seq + b.len() as u64;
        }
        out
    }
}

/// (pid, local port, remote port) → what the records say of that socket.
fn sides(cap: &Capture, pids: [u32; 2]) -> HashMap<(u32, u16, u16), Side> {
    let mut by: HashMap<(u32, u16, u16), Side> = HashMap::new();
    for r in &cap.records {
        let Some(pid) = r["pid"].as_u64().map(|p| p as u32) else { continue };
        if !pids.contains(&pid) || r["conn"].is_null() {
            continue;
        }
        let key = (pid, port_of(&r["conn"]["local"]), port_of(&r["conn"]["remote"]));
        let side = by.entry(key).or_default();
        match r["kind"].as_str().unwrap() {
            "conn" => side.events.push((
                r["event"].as_str().unwrap().to_string(),
                r["conn"]["role"].as_str().unwrap().to_string(),
            )),
            "data" => side
                .data
                .entry(r["direction"].as_str().unwrap().to_string())
                .or_default()
                .push((r["seq"].as_u64().unwrap(), payload(r))),
            other => panic!("unexpected {other} record: {r}"),
        }
    }
    by
}

/// Runs `count` connections under a sensor started with `extra` and checks
/// every one exactly; returns the capture for the caller's own checks.
fn exact_connections(count: usize, extra: &[&str]) -> Capture {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    args.extend_from_slice(extra);
    let sensor = Sensor::start(&args);
    let peers = run_peers(count, port);
    let cap = sensor.stop();
    assert_eq!(peers.ports.len(), count);

    let mut by = sides(&cap, [peers.client_pid, peers.server_pid]);
    let want_events =
        |role: &str| vec![("open".to_string(), role.to_string()), ("close".to_string(), role.to_string())];
    let mut wrong = Vec::new();
    for (i, &cport) in peers.ports.iter().enumerate() {
        let asked = [msg("open", i), msg("again", i)].concat();
        let answered = [msg("hello", i), msg("back", i)].concat();
        for (key, role, sent, received) in [
            ((peers.client_pid, cport, port), "client", &asked, &answered),
            ((peers.server_pid, port, cport), "server", &answered, &asked),
        ] {
            let who = format!("connection {i} {role} {key:?}");
            let Some(mut side) = by.remove(&key) else {
                wrong.push(format!("{who}: no records"));
                continue;
            };
            if side.events != want_events(role) {
                wrong.push(format!("{who}: conn events {:?}", side.events));
            }
            for (direction, want) in [("send", sent), ("recv", received)] {
                let got = side.bytes(direction);
                if &got != want {
                    wrong.push(format!("{who} {direction}: {:?}", String::from_utf8_lossy(&got)));
                }
            }
        }
    }
    for (key, side) in &by {
        wrong.push(format!("records of no connection of the test {key:?}: {:?}", side.events));
    }
    let shown: Vec<_> = wrong.iter().take(10).collect();
    let midstream = cap.records.iter().filter(|r| r["event"] == "midstream").count();
    assert!(
        wrong.is_empty(),
        "{} of {} sockets wrong ({midstream} midstream records, drops {:?}), first: {shown:#?}",
        wrong.len(),
        2 * count,
        drops(&cap)
    );
    cap
}

/// Reasons of the capture's `drop` records with their counts.
fn drops(cap: &Capture) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for r in cap.records.iter().filter(|r| r["kind"] == "drop") {
        *out.entry(r["reason"].as_str().unwrap().to_string()).or_default() += r["count"].as_u64().unwrap();
    }
    out
}

/// 6 000 connections (12 000 sockets) with the default table: all tracked,
/// nothing lost, nothing dropped.
#[test]
fn six_thousand_connections_with_the_default_table() {
    let cap = exact_connections(6000, &[]);
    assert_eq!(drops(&cap), HashMap::new(), "nothing dropped");
}

/// The same with a kernel table too small (6 144 entries for 12 000
/// sockets; user space tracks twice that): entries are evicted, and that is
/// said in `drop` records; a connection seen again after its entry was
/// evicted continues as itself (no `midstream`, bytes at their offsets) and
/// its close is still reported.
#[test]
fn evicted_connections_are_counted_and_recovered() {
    let table = 6144;
    let cap = exact_connections(6000, &["--max-connections", &table.to_string()]);
    let d = drops(&cap);
    let evicted = d.get("conn_table_evicted").copied().unwrap_or(0);
    assert!(evicted >= 12000 - table, "evictions counted: {d:?}");
    assert!(d.keys().all(|k| k == "conn_table_evicted"), "no other loss: {d:?}");
}

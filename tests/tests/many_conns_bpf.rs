//! A busy node (issue 27): thousands of loopback connections held open at
//! once, more sockets than the kernel's connection table holds, two small
//! exchanges on each. Every open and close is reported exactly once with
//! its role, every byte at its offset, never a false `midstream`; a
//! connection table that overflows says so in a `drop` record.

use nettap_e2e::inspect::status_kib;
use nettap_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

/// One server and its client (`programs/many_conns.py`), as it reports.
struct Peers {
    client_pid: u32,
    server_pid: u32,
    /// The server's port.
    port: u16,
    /// Client port of connection i.
    ports: Vec<u16>,
}

fn many_conns(ns: Option<&str>, count: usize, port: u16, addr: &str) -> Command {
    let mut c = in_ns(ns, &python());
    c.arg(program("many_conns.py")).args([
        "--count",
        &count.to_string(),
        "--port",
        &port.to_string(),
        "--addr",
        addr,
    ]);
    c
}

/// `count` connections on loopback (one process tree, on `ports[0]`), or,
/// `across` a namespace pair, split between servers on `ports` in one
/// namespace and as many clients in the other: a process may hold only so
/// many descriptors (20 000 here, which root cannot raise without
/// CAP_SYS_RESOURCE), and one client reaches one server port from some
/// 28 000 source ports. The clients open theirs one after the other and
/// hold them until all are open, so every connection is open at once; then
/// all close together.
fn run_peers(count: usize, across: Option<&NetNsPair>, ports: &[u16]) -> Vec<Peers> {
    let dir = tempfile::tempdir().unwrap();
    let Some(net) = across else {
        let port = ports[0];
        let out = dir.path().join("peers.json");
        let child =
            many_conns(None, count, port, "127.0.0.1").stdout(std::fs::File::create(&out).unwrap()).spawn();
        let v = client_report(child.expect("cannot start many_conns.py"), &out);
        return vec![peers(&v, v["server_pid"].as_u64().unwrap() as u32, port)];
    };
    let each = count / ports.len();
    let release = dir.path().join("release");
    let started: Vec<_> = (0..ports.len())
        .map(|g| {
            let port = ports[g];
            let ready = dir.path().join(format!("server{g}.ready"));
            let mut server = many_conns(Some(&net.a), each, port, &net.a4)
                .args(["--role", "server", "--ready"])
                .arg(&ready)
                .spawn_guarded();
            wait_for_file(&ready, || server.try_wait().unwrap().is_none());
            let out = dir.path().join(format!("peers{g}.json"));
            let mut client = many_conns(Some(&net.b), each, port, &net.a4)
                .args(["--role", "client", "--hold-file"])
                .arg(&release)
                .stdout(std::fs::File::create(&out).unwrap())
                .spawn()
                .expect("cannot start many_conns.py");
            wait_for_file(&release.with_extension("held"), || client.try_wait().unwrap().is_none());
            std::fs::remove_file(release.with_extension("held")).unwrap();
            (server, client, out, port)
        })
        .collect();
    std::fs::write(&release, b"").unwrap();
    let groups = started
        .into_iter()
        .map(|(mut server, client, out, port)| {
            let v = client_report(client, &out);
            assert!(wait_child(&mut server, "many_conns.py server").success(), "a server failed");
            peers(&v, server.id(), port)
        })
        .collect();
    // The servers' last FINs may still be on their way: the clients'
    // sockets close (to TIME_WAIT) only when those arrive.
    orphans_gone(&net.b);
    groups
}

/// Waits (bounded) until namespace `ns` has no orphaned TCP socket left
/// (closed by its program, not yet by TCP).
fn orphans_gone(ns: &str) {
    let start = std::time::Instant::now();
    loop {
        let out =
            Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/sockstat"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let orphans = text
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != "orphan").nth(1))
            .and_then(|n| n.parse::<u64>().ok());
        if orphans == Some(0) {
            return;
        }
        assert!(start.elapsed() < TIMEOUT, "orphaned sockets in {ns} did not close: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits for a client and reads its report.
fn client_report(mut client: std::process::Child, out: &std::path::Path) -> Value {
    let status = wait_child(&mut client, "many_conns.py");
    assert!(status.success(), "many_conns.py failed: {status}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn peers(v: &Value, server_pid: u32, port: u16) -> Peers {
    Peers {
        client_pid: v["client_pid"].as_u64().unwrap() as u32,
        server_pid,
        port,
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
fn sides(cap: &Capture, pids: &[u32]) -> HashMap<(u32, u16, u16), Side> {
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

/// Runs `count` connections to `pairs` servers (see `run_peers`) under a
/// sensor started with `extra` and checks every one exactly; returns the capture, for the caller's own
/// checks, and the sensor's peak resident memory in KiB.
fn exact_connections(
    count: usize,
    across: Option<&NetNsPair>,
    pairs: usize,
    extra: &[&str],
) -> (Capture, u64) {
    let ports: Vec<u16> = (0..pairs).map(|_| free_port()).collect();
    let port_args: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut args: Vec<&str> = port_args.iter().flat_map(|p| ["--port", p.as_str()]).collect();
    args.extend_from_slice(EXACT);
    args.extend_from_slice(extra);
    let sensor = Sensor::start(&args);
    let groups = run_peers(count, across, &ports);
    let peak_kib = status_kib(sensor.pid(), "VmHWM");
    let cap = sensor.stop();
    assert_eq!(groups.iter().map(|g| g.ports.len()).sum::<usize>(), count);

    let pids: Vec<u32> = groups.iter().flat_map(|g| [g.client_pid, g.server_pid]).collect();
    let mut by = sides(&cap, &pids);
    let want_events =
        |role: &str| vec![("open".to_string(), role.to_string()), ("close".to_string(), role.to_string())];
    let mut wrong = Vec::new();
    for peers in &groups {
        let port = peers.port;
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
    }
    for (key, side) in &by {
        wrong.push(format!("records of no connection of the test {key:?}: {:?}", side.events));
    }
    // Closes the kernel did not report reach the records all the same,
    // from the sensor's comparison with the sockets that exist.
    let listed = cap.records.iter().filter(|r| r["probe"] == "sock_diag:inet").count();
    eprintln!("{} sockets: {listed} closes found by sock_diag", 2 * count);
    let shown: Vec<_> = wrong.iter().take(10).collect();
    let midstream = cap.records.iter().filter(|r| r["event"] == "midstream").count();
    assert!(
        wrong.is_empty(),
        "{} of {} sockets wrong ({midstream} midstream records, drops {:?}), first: {shown:#?}",
        wrong.len(),
        2 * count,
        drops(&cap)
    );
    (cap, peak_kib)
}

/// The sensor's log lines naming programs the kernel skipped runs of.
fn skipped_programs(cap: &Capture) -> Vec<&str> {
    cap.log.lines().filter(|l| l.contains("skipped runs")).collect()
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
    let (cap, _) = exact_connections(6000, None, 1, &[]);
    let skipped = skipped_programs(&cap);
    assert_eq!(drops(&cap), HashMap::new(), "nothing dropped; skipped programs: {skipped:#?}");
}

/// The same with a kernel table too small (6 144 entries for 12 000
/// sockets; user space tracks twice that): entries are evicted, and that is
/// said in `drop` records; a connection seen again after its entry was
/// evicted continues as itself (no `midstream`, bytes at their offsets) and
/// its close is still reported.
#[test]
fn evicted_connections_are_counted_and_recovered() {
    let table = 6144;
    let (cap, _) = exact_connections(6000, None, 1, &["--max-connections", &table.to_string()]);
    let d = drops(&cap);
    let evicted = d.get("conn_table_evicted").copied().unwrap_or(0);
    assert!(evicted >= 12000 - table, "evictions counted: {d:?}");
    let skipped = skipped_programs(&cap);
    assert!(
        d.keys().all(|k| k == "conn_table_evicted"),
        "no other loss: {d:?}; skipped programs: {skipped:#?}"
    );
}

/// 100 000 connections held open at once between two network namespaces
/// (200 000 sockets, eight servers and eight clients at once), two exchanges
/// each, then all closed: every open, byte and close exact with the default
/// table, nothing dropped, and the sensor's peak memory within the bound
/// docs/benchmarks.md gives.
#[test]
fn a_hundred_thousand_connections_across_namespaces() {
    let net = NetNsPair::new(213);
    let (cap, peak_kib) = exact_connections(CONNS, Some(&net), 8, &[]);
    let skipped = skipped_programs(&cap);
    assert_eq!(drops(&cap), HashMap::new(), "nothing dropped; skipped programs: {skipped:#?}");
    eprintln!("{CONNS} connections: sensor peak {peak_kib} KiB");
    assert!(peak_kib < PEAK_KIB, "sensor peak {peak_kib} KiB, bound {PEAK_KIB} KiB");
}

/// Connections of the busy-node test.
const CONNS: usize = 100_000;
/// The sensor's peak memory bound for them (debug build): 200 000 sockets at
/// ≈ 1.2 KiB, and 160 MiB of its own (the test's 64 MiB ring among it).
const PEAK_KIB: u64 = 160 * 1024 + 200_000 * 12 / 10;

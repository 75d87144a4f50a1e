//! TLS plaintext from rustls, linked into a Rust program (tests/programs/rustls,
//! built by ci/install-rustls-peer.sh): a tokio-rustls server (rustls 0.23,
//! multi-threaded runtime) and clients on ureq (rustls 0.23) and on rustls
//! 0.21 and 0.22 directly, every process started after the sensor (held at
//! exec until probed). Plaintext must be exact at both ends with the
//! kernel's connection, the right pid and role, `source: "rustls"`, no
//! ciphertext, and nothing counted unbound. The stripped build is found
//! from what stripping keeps and captured the same way; a stripped copy
//! whose anchors are spoiled is refused with the reason.

use nettap_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

/// The test peer: `rustlspeer`, or `rustlspeer-stripped`.
fn peer(name: &str) -> PathBuf {
    cached_peer("NETTAP_RUSTLSPEER", "ci/install-rustls-peer.sh", name)
}

/// The peer's server on `port` with `threads` workers, listening.
fn server(bin: &Path, pki: &Pki, port: u16, threads: usize) -> KillOnDrop {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = Command::new(bin)
        .args(["server", "--addr", &format!("127.0.0.1:{port}"), "--threads", &threads.to_string()])
        .arg("--cert")
        .arg(&pki.server_cert)
        .arg("--key")
        .arg(&pki.server_key)
        .arg("--ready")
        .arg(&ready)
        .spawn_guarded();
    wait_for_file(&ready, || child.try_wait().unwrap().is_none());
    child
}

/// Runs the peer's client against `port` with `args` to success; its pid.
fn client(bin: &Path, pki: &Pki, port: u16, path: &str, args: &[&str]) -> u32 {
    let mut c = Command::new(bin)
        .args(["client", "--url", &format!("https://127.0.0.1:{port}{path}"), "--ca"])
        .arg(&pki.ca)
        .args(args)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "rustls client").success());
    c.id()
}

fn request_bytes(n: usize) -> Vec<u8> {
    let head = format!(
        "POST /echo/{n} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\n\r\n"
    );
    [head.into_bytes(), pattern_body("req", n).into_bytes()].concat()
}

fn response_bytes(n: usize) -> Vec<u8> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\n\r\n");
    [head.into_bytes(), pattern_body("resp", n).into_bytes()].concat()
}

/// The comm of a process running `bin` (the kernel keeps 15 bytes).
fn comm_of(bin: &Path) -> String {
    bin.file_name().unwrap().to_string_lossy().chars().take(15).collect()
}

/// Every data record of `pid` is rustls plaintext of a TLS connection to or
/// from the server's `port`, seen from `role`'s end, by a process named `comm`.
fn assert_rustls_data(cap: &Capture, pid: u32, role: &str, port: u16, comm: &str) {
    let data = cap.of("data", pid);
    assert!(!data.is_empty(), "{role} {pid}: no data records");
    let server_end = format!("127.0.0.1:{port}");
    for r in data {
        assert_eq!(r["source"], "rustls", "{role}: {r}");
        assert_eq!(r["comm"], comm);
        assert_eq!(r["conn"]["tls"], true, "{r}");
        assert_eq!(r["conn"]["role"], role, "{r}");
        let (ours, theirs) = if role == "client" { ("remote", "local") } else { ("local", "remote") };
        assert_eq!(r["conn"][ours], server_end.as_str(), "{r}");
        assert!(r["conn"][theirs].as_str().unwrap().starts_with("127.0.0.1:"), "{r}");
        let probe = r["probe"].as_str().unwrap();
        assert!(probe.starts_with("uprobe:rustls::") || probe.starts_with("uretprobe:rustls::"), "{r}");
    }
}

/// One direction of `pid`'s connection with `remote`, from its data records:
/// the bytes, contiguous from the first (any gap or truncation fails).
fn conn_bytes(cap: &Capture, pid: u32, remote: &str, direction: &str) -> Vec<u8> {
    let mut chunks: Vec<(u64, u64, Vec<u8>)> = cap
        .of("data", pid)
        .into_iter()
        .filter(|r| r["conn"]["remote"] == remote && r["direction"] == direction)
        .map(|r| (r["seq"].as_u64().unwrap(), r["truncated"].as_u64().unwrap_or(0), payload(r)))
        .collect();
    chunks.sort_by_key(|c| c.0);
    let mut bytes = Vec::new();
    for (seq, truncated, chunk) in chunks {
        assert_eq!(seq as usize, bytes.len(), "{direction} of pid {pid} with {remote}: gap at {seq}");
        assert_eq!(truncated, 0, "{direction} of pid {pid} with {remote}: truncated at {seq}");
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// No rustls read or write went unbound. The counter is the sensor's, for
/// every process: another rustls program running on the host (a Kubernetes
/// client of another test) can add to it, and is named in the failure.
fn assert_no_unbound(cap: &Capture) {
    let unbound = cap.dropped("tls_unbound");
    let others: Vec<&str> = cap
        .log
        .lines()
        .filter(|l| l.contains("rustls") && l.contains("probe attached") && !l.contains("rustlspeer"))
        .collect();
    assert_eq!(unbound, (0, 0), "unbound rustls plaintext; other rustls programs probed: {others:#?}");
}

/// The client's end as the records name it (its local address).
fn client_end(cap: &Capture, pid: u32) -> String {
    cap.of("data", pid)[0]["conn"]["local"].as_str().unwrap().to_string()
}

/// One exchange per size, exact.
fn assert_posts_of(records: &[&Value], role: &str) {
    assert_eq!(records.len(), SIZES.len(), "{role}: one exchange per size");
    for (r, &n) in records.iter().zip(&SIZES) {
        assert_eq!(r["source"], "rustls", "{role}");
        assert_eq!(r["conn"]["tls"], true);
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["path"], format!("/echo/{n}"));
        assert_http_body(&r["request"], &pattern_body("req", n), role);
        assert_eq!(r["response"]["status"], 200, "{role}: /echo/{n}");
        assert_http_body(&r["response"], &pattern_body("resp", n), role);
    }
}

#[test]
fn rustls_client_and_server_bodies_from_0_b_to_4_mib_exact_at_both_ends() {
    exact_at_both_ends("rustlspeer");
}

/// The same program stripped: its functions found without symbols
/// (rustls_stripped), the same bytes captured.
#[test]
fn rustls_stripped_client_and_server_bodies_from_0_b_to_4_mib_exact_at_both_ends() {
    exact_at_both_ends("rustlspeer-stripped");
}

fn exact_at_both_ends(name: &str) {
    let bin = peer(name);
    let comm = comm_of(&bin);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--raw", "--port", port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let srv = server(&bin, &pki, port, 4);
    let sizes = SIZES.map(|n| n.to_string()).join(",");
    // rustls 0.21 by hand: both directions' bytes are known exactly.
    let raw021 = client(&bin, &pki, port, "/", &["--lib", "0.21", "--sizes", &sizes]);
    // ureq on rustls 0.23, then rustls 0.22: their exchanges.
    let ureq = client(&bin, &pki, port, "/", &["--sizes", &sizes]);
    let raw022 = client(&bin, &pki, port, "/r", &["--lib", "0.22", "--n", "3"]);
    // Answers to /v… are written with write_vectored (as hyper writes).
    let vectored = client(&bin, &pki, port, "/v", &["--lib", "0.22", "--n", "3"]);
    let server_pid = srv.0.id();
    sensor.wait_for_record("the server's last answer", |r| {
        r["kind"] == "http" && r["pid"] == server_pid && r["request"]["path"] == "/v2"
    });
    drop(srv);
    let cap = sensor.stop();

    assert!(
        cap.log.lines().any(|l| l.contains("probe attached")
            && l.contains(name)
            && l.contains("PlaintextSink")
            && l.contains("::write")
            && l.contains("rustls 0.21.12, 0.22.4, 0.23.48")
            && l.contains("ok=true")),
        "no probe attached line naming the rustls versions:\n{}",
        cap.log
    );
    // The attach cost (exec to probed) as the sensor logs it.
    for l in cap.log.lines().filter(|l| l.contains("probes attached to a rustls program")) {
        eprintln!("{l}");
    }
    // The server was the program's first run: held at exec until probed.
    let held = format!("pid={server_pid} ");
    assert!(
        cap.log.lines().any(|l| l.contains("probes attached to a rustls program")
            && l.contains(&held)
            && l.contains("held=true")),
        "the server held at exec until probed:\n{}",
        cap.log
    );
    for (pid, role) in [
        (raw021, "client"),
        (ureq, "client"),
        (raw022, "client"),
        (vectored, "client"),
        (server_pid, "server"),
    ] {
        assert_rustls_data(&cap, pid, role, port, &comm);
    }
    // Exact bytes, both directions, both ends, from the first request.
    let want_sent: Vec<u8> = SIZES.iter().flat_map(|&n| request_bytes(n)).collect();
    let want_recv: Vec<u8> = SIZES.iter().flat_map(|&n| response_bytes(n)).collect();
    let end = client_end(&cap, raw021);
    let server_end = format!("127.0.0.1:{port}");
    // The plaintext's connection is the kernel's: its open names the same ends.
    let opened = cap.of("conn", raw021).into_iter().any(|r| {
        r["event"] == "open"
            && r["conn"]["local"] == end.as_str()
            && r["conn"]["remote"] == server_end.as_str()
    });
    assert!(opened, "the kernel's open of the 0.21 client's connection {end}");
    for (pid, dir, remote, want) in [
        (raw021, "send", &server_end, &want_sent),
        (raw021, "recv", &server_end, &want_recv),
        (server_pid, "recv", &end, &want_sent),
        (server_pid, "send", &end, &want_recv),
    ] {
        let got = conn_bytes(&cap, pid, remote, dir);
        assert_eq!(got.len(), want.len(), "{dir} of pid {pid} on the 0.21 connection");
        assert!(got == *want, "{dir} of pid {pid} on the 0.21 connection: bytes differ");
    }
    // ureq (0.23) at the client, tokio-rustls at the server: the HTTP exchanges.
    assert_posts_of(&cap.of("http", ureq), "client");
    let ureq_end = client_end(&cap, ureq);
    let server_http = cap.of("http", server_pid);
    let of_conn = |end: &str| -> Vec<&Value> {
        server_http.iter().copied().filter(|r| r["conn"]["remote"] == end).collect()
    };
    assert_posts_of(&of_conn(&end), "server (0.21 client)");
    // tokio-rustls moves the connection once its handshake is done; a
    // request that came with the handshake's last flight is read from the
    // moved object and held until the new address is bound (README, rustls).
    assert_posts_of(&of_conn(&ureq_end), "server (ureq client)");
    let raw022_end = client_end(&cap, raw022);
    let server_gets: Vec<&str> =
        of_conn(&raw022_end).iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(server_gets, ["/r0", "/r1", "/r2"], "server (0.22 client)");
    // The vectored answers, exact at the server (head and body from two
    // IoSlices) as at the client.
    let vectored_end = client_end(&cap, vectored);
    let want_answers: Vec<u8> = (0..3)
        .flat_map(|i| {
            let body = format!("rustls says: /v{i}");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    assert!(
        conn_bytes(&cap, server_pid, &vectored_end, "send") == want_answers,
        "the server's vectored answers differ"
    );
    assert!(conn_bytes(&cap, vectored, &server_end, "recv") == want_answers, "the client's answers differ");
    assert_no_unbound(&cap);
    let gets: Vec<&Value> = cap.of("http", raw022);
    let paths: Vec<&str> = gets.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/r0", "/r1", "/r2"], "rustls 0.22 client");
    for r in gets {
        assert_eq!(r["response"]["body"], format!("rustls says: {}", r["request"]["path"].as_str().unwrap()));
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

/// The finder on the peer: every role in every rustls version linked in,
/// from the symbol table, and the same functions from the stripped copy.
#[test]
fn rustls_functions_are_found_by_symbol_in_every_version() {
    use nettap_sensor::probes::rustls_find::{locate, Located, Role};
    let data = std::fs::read(peer("rustlspeer")).unwrap();
    let start = std::time::Instant::now();
    let Located::Found { functions, versions, missing } = locate(&data).unwrap() else {
        panic!("rustls not found")
    };
    eprintln!("rustls_find::locate: {:?} for {} bytes", start.elapsed(), data.len());
    assert_eq!(versions, ["0.21.12", "0.22.4", "0.23.48"]);
    assert!(missing.is_empty(), "{missing:?}");
    let count = |r: Role| functions.iter().filter(|f| f.role == r).count();
    // Writes: 0.21 and 0.22 clients, 0.23 client (ureq) and server (tokio-rustls).
    assert_eq!(count(Role::PlaintextWrite), 4, "{functions:#?}");
    // One per write: both are in the vtable rustls's Writer calls through.
    assert_eq!(count(Role::PlaintextWriteVectored), 4, "{functions:#?}");
    assert_eq!(count(Role::PlaintextRead), 3, "{functions:#?}");
    assert_eq!(count(Role::TlsWrite), 3);
    assert_eq!(count(Role::TlsRead), 3);
    assert_eq!((count(Role::FirstChunk), count(Role::Consume)), (1, 1), "0.23 only");
    let stripped = std::fs::read(peer("rustlspeer-stripped")).unwrap();
    let start = std::time::Instant::now();
    let without = locate(&stripped).unwrap();
    eprintln!("rustls_find::locate, stripped: {:?} for {} bytes", start.elapsed(), stripped.len());
    // The same functions at the same offsets (their names say how they were found).
    let Located::Found { functions: found, versions: named, missing } = without else {
        panic!("the stripped copy refused: {without:?}")
    };
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(named, versions);
    let places = |f: &[nettap_sensor::probes::rustls_find::Found]| -> Vec<(Role, u64)> {
        f.iter().map(|f| (f.role, f.offset)).collect()
    };
    assert_eq!(places(&found), places(&functions));
}

/// Many connections at once on a multi-threaded server: every exchange at
/// both ends bound to its own connection (the distances learnt once per
/// process and function), none unbound.
#[test]
fn rustls_many_concurrent_connections_are_each_bound_to_their_socket() {
    const CONNS: usize = 24;
    const N: usize = 5;
    let bin = peer("rustlspeer");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let sensor = Sensor::start(&["--port", &port.to_string()]);
    let srv = server(&bin, &pki, port, 4);
    let conns = CONNS.to_string();
    let n = N.to_string();
    let ureq = client(&bin, &pki, port, "/c", &["--conns", &conns, "--n", &n]);
    let raw = client(&bin, &pki, port, "/d", &["--lib", "0.22", "--conns", &conns, "--n", &n]);
    let server_pid = srv.0.id();
    let want = 2 * CONNS * N;
    // Both clients have their answers; the server's last records may lag.
    let records = sensor.dir.path().join("records.jsonl");
    let start = std::time::Instant::now();
    while start.elapsed() < TIMEOUT {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        let seen = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["kind"] == "http" && r["pid"] == server_pid)
            .count();
        if seen >= want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(srv);
    let cap = sensor.stop();

    for (pid, role, prefix) in [(ureq, "client", "/c"), (raw, "client", "/d"), (server_pid, "server", "")] {
        let h = cap.of("http", pid);
        let mine: Vec<&&Value> =
            h.iter().filter(|r| r["request"]["path"].as_str().unwrap().starts_with(prefix)).collect();
        for r in &mine {
            let path = r["request"]["path"].as_str().unwrap();
            assert_eq!(r["response"]["body"], format!("rustls says: {path}"), "{role}: {r}");
            assert_eq!(r["conn"]["role"], role);
            assert_eq!(r["source"], "rustls");
        }
        // Each connection carries one client's N requests, in order, all of
        // them (a server connection's first request too, read after
        // tokio-rustls moved the connection: README, rustls).
        let mut by_conn: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        for r in &mine {
            let end = if role == "client" { "local" } else { "remote" };
            let path = r["request"]["path"].as_str().unwrap();
            by_conn.entry(r["conn"][end].as_str().unwrap().to_string()).or_default().push(path);
        }
        assert_eq!(by_conn.len(), if role == "server" { 2 * CONNS } else { CONNS }, "{role}: connections");
        for (end, paths) in &by_conn {
            let base = &paths[0][..2];
            let want: Vec<String> = (0..N).map(|i| format!("{base}{i}")).collect();
            assert_eq!(paths, &want, "{role} {pid}: the connection from {end}");
        }
    }
    assert_no_unbound(&cap);
    eprintln!("rustls binding: all {want} exchanges at the server and at the clients, none unbound");
}

/// A fresh server whose clients each send one request with their last
/// handshake flight (ureq): no connection is read twice, and the first
/// connection's answer comes before any distance is confirmed. Its request,
/// held since the handshake, is released by the read that finds the
/// connection's end (bound to the socket though it moves no bytes) and
/// paired with the answer that overtook it; every request is captured,
/// exact, at its own connection, none unbound.
#[test]
fn rustls_single_request_connections_are_all_captured_from_the_first() {
    const CLIENTS: usize = 8;
    let bin = peer("rustlspeer");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let sensor = Sensor::start(&["--port", &port.to_string()]);
    let srv = server(&bin, &pki, port, 4);
    let clients: Vec<u32> =
        (1..=CLIENTS).map(|i| client(&bin, &pki, port, &format!("/u{i}-"), &["--n", "1"])).collect();
    let server_pid = srv.0.id();
    let last = format!("/u{CLIENTS}-0");
    sensor.wait_for_record("the server's last request", |r| {
        r["kind"] == "http" && r["pid"] == server_pid && r["request"]["path"] == last.as_str()
    });
    drop(srv);
    let cap = sensor.stop();
    let mut captured = Vec::new();
    for (i, &pid) in (1..).zip(&clients) {
        let path = format!("/u{i}-0");
        let at_client = cap.of("http", pid);
        assert_eq!(at_client.len(), 1, "client {i}");
        assert_eq!(at_client[0]["request"]["path"], path.as_str());
        let end = at_client[0]["conn"]["local"].as_str().unwrap();
        let at_server: Vec<&Value> =
            cap.of("http", server_pid).into_iter().filter(|r| r["conn"]["remote"] == end).collect();
        for r in &at_server {
            assert_eq!(r["request"]["path"], path.as_str(), "server, connection of client {i}");
            assert_eq!(r["response"]["body"], format!("rustls says: {path}"));
            assert_eq!(r["conn"]["role"], "server");
            assert_eq!(r["source"], "rustls");
        }
        assert!(at_server.len() <= 1, "client {i}: {at_server:?}");
        if at_server.len() == 1 {
            captured.push(i);
        }
    }
    assert_eq!(captured.len(), CLIENTS, "server captured the requests of clients {captured:?}");
    let unbound = cap.dropped("tls_unbound");
    assert_eq!(unbound, (0, 0), "unbound");
    eprintln!(
        "rustls single-request connections: {} of {CLIENTS} captured at the server, unbound {unbound:?}",
        captured.len()
    );
}

/// A stripped build whose anchors are spoiled (a copy with one of rustls's
/// messages overwritten, so `into_first_chunk` and `Reader::read` can no
/// longer be told apart): the sensor says so rather than probing a guessed
/// address, and nothing of it is captured.
#[test]
fn rustls_stripped_build_without_its_anchors_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = std::fs::read(peer("rustlspeer-stripped")).unwrap();
    let at = data
        .windows(b"illegal `BufRead::consume` usage".len())
        .position(|w| w == b"illegal `BufRead::consume` usage")
        .expect("rustls's consume message in the peer");
    data[at..at + 7].copy_from_slice(b"xxxxxxx");
    let bin = dir.path().join("rustlspeer-spoiled");
    std::fs::write(&bin, &data).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let sensor = Sensor::start(&["--port", &port.to_string()]);
    let srv = server(&bin, &pki, port, 2);
    let c = client(&bin, &pki, port, "/s", &["--n", "2"]);
    let server_pid = srv.0.id();
    drop(srv);
    let cap = sensor.stop();

    let refused = cap.log.lines().find(|l| {
        l.contains("probe attached: failed")
            && l.contains("rustlspeer-spoiled")
            && l.contains("cannot be told from into_first_chunk")
    });
    assert!(refused.is_some(), "no refusal naming the spoiled file and why:\n{}", cap.log);
    assert!(refused.unwrap().contains("rustls 0.21.12, 0.22.4, 0.23.48"), "{refused:?}");
    for pid in [c, server_pid] {
        let rustls: Vec<&Value> =
            cap.records.iter().filter(|r| r["pid"] == pid && r["source"] == "rustls").collect();
        assert!(rustls.is_empty(), "records from an unprobed program: {rustls:?}");
        assert!(cap.of("http", pid).is_empty(), "no plaintext exchange can be seen without probes");
    }
}

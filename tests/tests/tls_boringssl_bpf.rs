//! TLS plaintext from BoringSSL linked into grpcio's stripped extension
//! module (gRPC's C core): a grpcio server and client over a TLS channel
//! with a test CA, both on 127.0.0.1, both started after the sensor. Each
//! end's calls must be `http` records with `source: "boringssl"`, the
//! request and response messages exact (nonces, and a message of 64 KiB
//! that spans several TLS records), the right pid and role, the connection
//! of the real socket (the kernel's own `conn` records of that pid), and no
//! ciphertext written.

use nettap_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// The `probe attached` lines name the extension module, each function and
/// the library with grpcio's version (ci/install.sh pins 1.68.1), all attached.
fn assert_boringssl_attached(log: &str) {
    for function in ["SSL_write", "SSL_read", "SSL_do_handshake", "bio_write"] {
        assert!(
            log.lines().any(|l| l.contains("probe attached")
                && l.contains("cygrpc.")
                && l.contains(function)
                && l.contains("version=\"BoringSSL (grpcio 1.68.1)\"")
                && l.contains("ok=true")),
            "no probe attached line for {function} on cygrpc:\n{log}"
        );
    }
}

/// A nonce per run: the messages cannot come from another test's traffic.
fn nonce() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

/// A sensor capturing `port`, and a grpcio TLS server on it whose probes
/// are in place (the server mapped the module at `import grpc`; the probes
/// are on the file, so every later process mapping it has them too).
struct Setup {
    sensor: Sensor,
    server: KillOnDrop,
    pki: Pki,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        Setup::start_with(&[])
    }

    /// With more sensor arguments.
    fn start_with(extra: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), &[]);
        let port = free_port();
        let port_s = port.to_string();
        let ready = dir.path().join("ready");
        let mut args = vec!["--port", port_s.as_str()];
        args.extend_from_slice(EXACT);
        args.extend_from_slice(extra);
        let sensor = Sensor::start(&args);
        let mut server = Command::new(venv_python())
            .arg(program("grpc_peer.py"))
            .args(["tls-server", &port_s])
            .arg(&ready)
            .arg(&pki.server_cert)
            .arg(&pki.server_key)
            .spawn_guarded();
        wait_for_file(&ready, || server.try_wait().unwrap().is_none());
        sensor.wait_for_log(&["probe attached", "cygrpc.", "bio_write"]);
        Setup { sensor, server, pki, port, _dir: dir }
    }

    /// Runs the peer's client `mode` with `args` to success; its pid.
    fn client(&self, mode: &str, args: &[&str]) -> u32 {
        let mut client = Command::new(venv_python())
            .arg(program("grpc_peer.py"))
            .args([mode, &self.port.to_string()])
            .arg(&self.pki.ca)
            .args(args)
            .spawn()
            .unwrap();
        assert!(wait_child(&mut client, "grpcio TLS client").success());
        client.id()
    }

    /// Stops the server and the sensor: the server's pid and the capture.
    fn stop(self) -> (u32, Capture) {
        let server_pid = self.server.id();
        drop(self.server);
        let cap = self.sensor.stop();
        assert_boringssl_attached(&cap.log);
        for reason in ["tls_socket_unknown", "ringbuf_full"] {
            assert_eq!(cap.dropped(reason), (0, 0), "{reason}");
        }
        (server_pid, cap)
    }
}

/// The kernel's `conn` record of `pid`'s connection to or from `port`:
/// (local, remote) of the real socket.
fn kernel_conn(cap: &Capture, pid: u32, port: u16) -> (String, String) {
    let port_end = format!("127.0.0.1:{port}");
    let opens: Vec<&Value> = cap
        .of("conn", pid)
        .into_iter()
        .filter(|r| {
            r["event"] == "open" && (r["conn"]["local"] == port_end || r["conn"]["remote"] == port_end)
        })
        .collect();
    assert_eq!(opens.len(), 1, "one connection of pid {pid}: {opens:#?}");
    let c = &opens[0]["conn"];
    (c["local"].as_str().unwrap().to_string(), c["remote"].as_str().unwrap().to_string())
}

#[test]
fn grpcio_tls_both_ends_exact_with_the_real_connection() {
    let setup = Setup::start();
    let port = setup.port;
    let nonce = nonce();
    let client_pid = setup.client("tls-client", &[&nonce]);
    let (server_pid, cap) = setup.stop();

    let small = format!("ping:{nonce}");
    let big = format!("{nonce}{}", "x".repeat(65536));
    let (client_local, client_remote) = kernel_conn(&cap, client_pid, port);
    assert_eq!(client_remote, format!("127.0.0.1:{port}"));
    let (server_local, server_remote) = kernel_conn(&cap, server_pid, port);
    assert_eq!(
        (server_local.as_str(), server_remote.as_str()),
        (client_remote.as_str(), client_local.as_str())
    );
    for (pid, role, local, remote) in [
        (client_pid, "client", &client_local, &client_remote),
        (server_pid, "server", &server_local, &server_remote),
    ] {
        let calls = cap.of("http", pid);
        assert_eq!(calls.len(), 2, "{role}: {calls:#?}\n{}", cap.log);
        for (r, msg) in calls.iter().zip([&small, &big]) {
            assert_eq!(r["source"], "boringssl", "{role}: {r}");
            assert_eq!(r["protocol"], "h2", "{role}");
            assert_eq!(r["conn"]["tls"], true, "{role}");
            assert_eq!(r["conn"]["role"], role, "{role}");
            assert_eq!(r["conn"]["local"], local.as_str(), "{role}");
            assert_eq!(r["conn"]["remote"], remote.as_str(), "{role}");
            assert_eq!(r["request"]["path"], "/nettap.test.Echo/Say", "{role}");
            let g = &r["grpc"];
            assert_eq!(g["status"], 0, "{role}: {r}");
            assert!(
                g["request_messages"] == serde_json::json!([{ "text": msg }]),
                "{role}: request of {} bytes differs",
                msg.len()
            );
            let answer = format!("pong:{msg}");
            assert!(
                g["response_messages"] == serde_json::json!([{ "text": answer }]),
                "{role}: response of {} bytes differs",
                answer.len()
            );
        }
        // No ciphertext: no data record of this process at all (the h2
        // plaintext all became http records), and the handshake was never written.
        assert!(cap.of("data", pid).is_empty(), "{role}: data records {:#?}", cap.of("data", pid));
    }
}

/// Channels on their own connections at once, calls on as many threads:
/// gRPC's event engine moves their ciphertext on its own threads, and each
/// SSL object must still get its own socket, at both ends.
#[test]
fn grpcio_tls_concurrent_connections_each_on_its_own_socket() {
    const N: usize = 8;
    let setup = Setup::start();
    let port = setup.port;
    let nonce = nonce();
    let client_pid = setup.client("tls-clients", &[&nonce, &N.to_string()]);
    let (server_pid, cap) = setup.stop();

    let port_end = format!("127.0.0.1:{port}");
    let opened = |pid: u32| -> BTreeSet<(String, String)> {
        cap.of("conn", pid)
            .into_iter()
            .filter(|r| {
                r["event"] == "open" && (r["conn"]["local"] == port_end || r["conn"]["remote"] == port_end)
            })
            .map(|r| {
                (r["conn"]["local"].as_str().unwrap().into(), r["conn"]["remote"].as_str().unwrap().into())
            })
            .collect()
    };
    let (client_conns, server_conns) = (opened(client_pid), opened(server_pid));
    assert_eq!(client_conns.len(), N, "{client_conns:?}");
    // Per end: message -> the connections its calls were seen on.
    let mut seen: BTreeMap<(&str, String), BTreeSet<(String, String)>> = BTreeMap::new();
    for (pid, role, conns) in [(client_pid, "client", &client_conns), (server_pid, "server", &server_conns)] {
        let calls = cap.of("http", pid);
        assert_eq!(calls.len(), 3 * N, "{role}: {} calls", calls.len());
        for r in calls {
            assert_eq!(r["source"], "boringssl", "{role}: {r}");
            assert_eq!(r["conn"]["role"], role, "{role}: {r}");
            assert_eq!(r["conn"]["tls"], true, "{role}");
            let g = &r["grpc"];
            assert_eq!(g["status"], 0, "{role}: {r}");
            let msg = g["request_messages"][0]["text"].as_str().unwrap().to_string();
            assert_eq!(
                g["response_messages"],
                serde_json::json!([{ "text": format!("pong:{msg}") }]),
                "{role}"
            );
            let conn =
                (r["conn"]["local"].as_str().unwrap().into(), r["conn"]["remote"].as_str().unwrap().into());
            assert!(conns.contains(&conn), "{role}: {conn:?} is no connection the kernel saw: {conns:?}");
            seen.entry((role, msg)).or_default().insert(conn);
        }
        assert!(cap.of("data", pid).is_empty(), "{role}: data records");
    }
    for i in 0..N {
        let msg = format!("{nonce}-{i}");
        let client = &seen[&("client", msg.clone())];
        let server = &seen[&("server", msg.clone())];
        assert_eq!(client.len(), 1, "channel {i}'s calls on one connection at the client: {client:?}");
        let (local, remote) = client.first().unwrap();
        assert_eq!(server, &BTreeSet::from([(remote.clone(), local.clone())]), "channel {i} at the server");
    }
    let client_sockets: BTreeSet<_> =
        (0..N).map(|i| seen[&("client", format!("{nonce}-{i}"))].clone()).collect();
    assert_eq!(client_sockets.len(), N, "each channel its own connection");
}

/// `sized` of grpc_peer.py: `n` bytes of the nonce and a pattern.
fn sized(nonce: &str, n: usize) -> Vec<u8> {
    format!("{nonce}:0123456789abcdef").bytes().cycle().take(n).collect()
}

/// The DATA payloads of an HTTP/2 byte stream (the client's preface
/// skipped), per stream id, in stream order.
fn h2_data(mut b: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if b.starts_with(PREFACE) {
        b = &b[PREFACE.len()..];
    }
    let mut data: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    while !b.is_empty() {
        assert!(b.len() >= 9, "a frame header cut short");
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        let (kind, flags) = (b[3], b[4]);
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
        let payload = &b[9..9 + len];
        if kind == 0 {
            assert_eq!(flags & 0x8, 0, "gRPC does not pad");
            data.entry(stream).or_default().extend_from_slice(payload);
        }
        b = &b[9 + len..];
    }
    data
}

/// The messages of one side's gRPC DATA (5-byte prefix each), stream by stream.
fn grpc_messages(data: &BTreeMap<u32, Vec<u8>>) -> Vec<Vec<u8>> {
    data.values()
        .flat_map(|d| {
            let mut out = Vec::new();
            let mut b = &d[..];
            while !b.is_empty() {
                assert_eq!(b[0], 0, "uncompressed");
                let n = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
                out.push(b[5..5 + n].to_vec());
                b = &b[5 + n..];
            }
            out
        })
        .collect()
}

/// Messages of 0 B to 4 MiB each way, every plaintext chunk written
/// (`--raw`): each end's two TLS plaintext streams are whole from byte 0,
/// what one end sent is byte for byte what the other received, and the
/// gRPC messages in them are exactly the ones sent.
#[test]
fn grpcio_tls_messages_0_b_to_4_mib_each_way_byte_exact_at_both_ends() {
    const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];
    let setup = Setup::start_with(&["--raw"]);
    let port = setup.port;
    let nonce = nonce();
    let sizes = SIZES.map(|n| n.to_string()).join(",");
    let client_pid = setup.client("tls-sizes", &[&nonce, &sizes]);
    let (server_pid, cap) = setup.stop();

    let (client_local, _) = kernel_conn(&cap, client_pid, port);
    let mut streams = BTreeMap::new();
    for (pid, role) in [(client_pid, "client"), (server_pid, "server")] {
        for r in cap.of("data", pid) {
            assert_eq!(r["source"], "boringssl", "{role}: no ciphertext or kernel bytes: {r}");
            assert_eq!(r["conn"]["tls"], true, "{role}");
            assert_eq!(r["conn"]["role"], role, "{role}");
            let client_end = if role == "client" { &r["conn"]["local"] } else { &r["conn"]["remote"] };
            assert_eq!(client_end, client_local.as_str(), "{role}");
        }
        for dir in ["send", "recv"] {
            let s = cap.stream(pid, dir);
            assert!(s.gaps.is_empty(), "{role} {dir}: gaps {:?}", s.gaps);
            assert_eq!(s.start, 0, "{role} {dir}");
            streams.insert((role, dir), s.bytes);
        }
    }
    // What one end sent is what the other received, but for what was still
    // in flight when the client closed (the server's last frames, which the
    // client no longer read).
    for (from, to) in [("client", "server"), ("server", "client")] {
        let (sent, got) = (&streams[&(from, "send")], &streams[&(to, "recv")]);
        eprintln!("{from} sent {} bytes, {to} received {}", sent.len(), got.len());
        assert!(
            got.len() <= sent.len() && sent[..got.len()] == got[..],
            "{from}'s sent plaintext and {to}'s received differ"
        );
    }
    let requests = grpc_messages(&h2_data(&streams[&("client", "send")]));
    let responses = grpc_messages(&h2_data(&streams[&("server", "send")]));
    assert_eq!(requests.len(), SIZES.len());
    assert_eq!(responses.len(), SIZES.len());
    for ((req, resp), n) in requests.iter().zip(&responses).zip(SIZES) {
        let want = sized(&nonce, n);
        assert!(req == &want, "request of {n} bytes: got {} bytes, differing", req.len());
        let mut answer = b"pong:".to_vec();
        answer.extend_from_slice(&want);
        assert!(resp == &answer, "response to {n} bytes: got {} bytes, differing", resp.len());
    }
}

/// A gRPC message as carried: uncompressed flag, 4-byte length, bytes.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend((msg.len() as u32).to_be_bytes());
    f.extend(msg);
    f
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A TLS connection made (and used) before the sensor started: both ends'
/// SSL objects did their handshake unseen, so each is bound by the
/// ciphertext of its first write after the probes, that write's plaintext
/// held until then. What an end read before its first write (the server's
/// first request) is counted (`tls_socket_unknown`), never given a guessed
/// socket; everything else is captured at both ends on the connection the
/// kernel reports.
#[test]
fn grpcio_tls_connection_from_before_the_sensor_is_bound_by_its_next_writes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let port_s = port.to_string();
    let (server_ready, client_ready, go) =
        (dir.path().join("server"), dir.path().join("client"), dir.path().join("go"));
    let mut server = Command::new(venv_python())
        .arg(program("grpc_peer.py"))
        .args(["tls-server", &port_s])
        .arg(&server_ready)
        .arg(&pki.server_cert)
        .arg(&pki.server_key)
        .spawn_guarded();
    wait_for_file(&server_ready, || server.try_wait().unwrap().is_none());
    let nonce = nonce();
    let mut client = Command::new(venv_python())
        .arg(program("grpc_peer.py"))
        .args(["tls-late-client", &port_s])
        .arg(&pki.ca)
        .arg(&nonce)
        .arg(&client_ready)
        .arg(&go)
        .spawn_guarded();
    wait_for_file(&client_ready, || client.try_wait().unwrap().is_none());
    // The module is found in the running processes' maps at start-up.
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    sensor.wait_for_log(&["probe attached", "cygrpc.", "bio_write"]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_child(&mut client, "grpcio TLS late client").success());
    let (client_pid, server_pid) = (client.id(), server.id());
    drop(server);
    let cap = sensor.stop();
    assert_boringssl_attached(&cap.log);

    // The connection as the kernel saw it first: midstream, at both ends.
    let port_end = format!("127.0.0.1:{port}");
    let midstream = |pid: u32| -> (String, String) {
        let m: Vec<&Value> = cap
            .of("conn", pid)
            .into_iter()
            .filter(|r| {
                r["event"] == "midstream"
                    && (r["conn"]["local"] == port_end || r["conn"]["remote"] == port_end)
            })
            .collect();
        assert_eq!(m.len(), 1, "pid {pid}: {m:#?}");
        (m[0]["conn"]["local"].as_str().unwrap().into(), m[0]["conn"]["remote"].as_str().unwrap().into())
    };
    let (client_local, client_remote) = midstream(client_pid);
    assert_eq!(midstream(server_pid), (client_remote.clone(), client_local.clone()));
    let mut streams = BTreeMap::new();
    for (pid, role, local) in [(client_pid, "client", &client_local), (server_pid, "server", &client_remote)]
    {
        for r in cap.of("data", pid) {
            assert_eq!(r["source"], "boringssl", "{role}: no ciphertext or kernel bytes: {r}");
            assert_eq!(r["conn"]["local"], local.as_str(), "{role}");
        }
        for dir in ["send", "recv"] {
            streams.insert((role, dir), cap.stream(pid, dir).bytes);
        }
    }
    // Everything but the server's read of the first request after the
    // sensor started, which came before the server's first write bound it.
    for i in 0..4 {
        let msg = format!("{nonce}-{i}").into_bytes();
        let answer = [b"pong:".as_slice(), &msg].concat();
        for (role, dir, want) in [
            ("client", "send", &msg),
            ("server", "recv", &msg),
            ("server", "send", &answer),
            ("client", "recv", &answer),
        ] {
            if i == 0 && (role, dir) == ("server", "recv") {
                continue; // read before the server's first write bound it, unless a frame of its own did
            }
            assert!(
                contains(&streams[&(role, dir)], &framed(want)),
                "call {i}: the {role}'s {dir} plaintext lacks it"
            );
        }
    }
    let (unbound, _) = cap.dropped("tls_socket_unknown");
    eprintln!("plaintext calls counted unbound: {unbound}");
    let first = framed(format!("{nonce}-0").as_bytes());
    if !contains(&streams[&("server", "recv")], &first) {
        assert!(unbound >= 1, "the server's first read, before its binding, is counted: {unbound}");
    }
}

/// With `--port`, a grpcio connection on another port is bound like any
/// other (before the port filter, as OpenSSL's sockets are) and then left
/// out: no records and no `tls_socket_unknown` for its plaintext.
#[test]
fn grpcio_tls_on_an_unwanted_port_is_left_out_not_counted_unbound() {
    let setup = Setup::start();
    let other_port = free_port();
    let other_s = other_port.to_string();
    let ready = setup._dir.path().join("other-ready");
    let mut other = Command::new(venv_python())
        .arg(program("grpc_peer.py"))
        .args(["tls-server", &other_s])
        .arg(&ready)
        .arg(&setup.pki.server_cert)
        .arg(&setup.pki.server_key)
        .spawn_guarded();
    wait_for_file(&ready, || other.try_wait().unwrap().is_none());
    let nonce = nonce();
    let mut unwanted = Command::new(venv_python())
        .arg(program("grpc_peer.py"))
        .args(["tls-client", &other_s])
        .arg(&setup.pki.ca)
        .arg(&nonce)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut unwanted, "grpcio TLS client of the other port").success());
    let wanted = setup.client("tls-client", &[&nonce]);
    let other_pid = other.id();
    drop(other);
    // stop() also checks that nothing was counted unbound.
    let (server_pid, cap) = setup.stop();
    for pid in [unwanted.id(), other_pid] {
        assert!(cap.records.iter().all(|r| r["pid"] != pid), "pid {pid} of the unwanted port has records");
    }
    assert_eq!(cap.of("http", wanted).len(), 2);
    assert_eq!(cap.of("http", server_pid).len(), 2);
}

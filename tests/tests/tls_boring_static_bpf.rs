//! TLS plaintext from BoringSSL linked statically into a program: the
//! `boring` crate's HTTPS server and client (tests/programs/boring, built by
//! ci/install-boring-peer.sh with its symbol table and stripped), every
//! process started after the sensor (held at exec until probed). Bodies of
//! 0 B to 4 MiB each way must be exact at both ends, from the first byte,
//! with the kernel's connection, the right pid and role, `source:
//! "boringssl"`, no ciphertext and nothing counted unbound; the stripped
//! build's functions are found without symbols, at the very offsets the
//! symbol table gives.

use nettap_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

/// The test peer: `boringpeer`, or `boringpeer-stripped`.
fn peer(name: &str) -> PathBuf {
    cached_peer("NETTAP_BORINGPEER", "ci/install-boring-peer.sh", name)
}

/// The peer's server on `port`, listening.
fn server(bin: &Path, pki: &Pki, port: u16) -> KillOnDrop {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = Command::new(bin)
        .args(["server", "--addr", &format!("127.0.0.1:{port}")])
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

/// Runs the peer's client against `port` with `args` to success; what it
/// said of itself (pid, local and remote ends).
fn client(bin: &Path, pki: &Pki, port: u16, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("info");
    let mut c = Command::new(bin)
        .args(["client", "--addr", &format!("127.0.0.1:{port}"), "--ca"])
        .arg(&pki.ca)
        .arg("--info")
        .arg(&info)
        .args(args)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "boring client").success());
    serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap()
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

/// One exchange per size, exact (bodies kept to the http record's limit).
fn assert_echo_posts(records: &[&Value], role: &str) {
    assert_eq!(records.len(), SIZES.len(), "{role}: one exchange per size");
    for (r, &n) in records.iter().zip(&SIZES) {
        assert_eq!(r["source"], "boringssl", "{role}");
        assert_eq!(r["conn"]["tls"], true);
        assert_eq!(r["conn"]["role"], role);
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["path"], format!("/echo/{n}"));
        assert_http_body(&r["request"], &pattern_body("req", n), role);
        assert_eq!(r["response"]["status"], 200, "{role}: /echo/{n}");
        assert_http_body(&r["response"], &pattern_body("resp", n), role);
    }
}

/// The program's `comm`: its file name, cut to the kernel's 15 bytes.
fn comm_of(bin: &Path) -> String {
    bin.file_name().unwrap().to_str().unwrap().chars().take(15).collect()
}

/// A server and a client of `name`, both started after the sensor: the
/// probes are attached while each is held at exec, both ends' bytes are
/// exact from the first request, and the `probe attached` lines say how
/// the functions were found (`how`).
fn exact_at_both_ends(name: &str, how: &str) {
    let bin = peer(name);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--raw", "--port", port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let srv = server(&bin, &pki, port);
    let sizes = SIZES.map(|n| n.to_string()).join(",");
    let info = client(&bin, &pki, port, &["--sizes", &sizes]);
    let server_pid = srv.0.id();
    let last = format!("/echo/{}", SIZES[SIZES.len() - 1]);
    sensor.wait_for_record("the server's last answer", |r| {
        r["kind"] == "http" && r["pid"] == server_pid && r["request"]["path"] == last.as_str()
    });
    drop(srv);
    let cap = sensor.stop();

    for function in ["SSL_write", "SSL_read", "SSL_do_handshake"] {
        assert!(
            cap.log.lines().any(|l| l.contains("probe attached")
                && l.contains(bin.to_str().unwrap())
                && l.contains(function)
                && l.contains(how)
                && l.contains("ok=true")),
            "no probe attached line for {function} on {name} ({how}):\n{}",
            cap.log
        );
    }
    assert!(
        !cap.log.lines().any(|l| l.contains("probe attached") && l.contains(name) && l.contains("OpenSSL")),
        "the program was taken for OpenSSL (same function names):\n{}",
        cap.log
    );
    // The attach cost (exec to probed) as the sensor logs it.
    for l in cap.log.lines().filter(|l| l.contains("probes attached to a program with BoringSSL linked in")) {
        eprintln!("{l}");
    }
    let want_sent: Vec<u8> = SIZES.iter().flat_map(|&n| request_bytes(n)).collect();
    let want_recv: Vec<u8> = SIZES.iter().flat_map(|&n| response_bytes(n)).collect();
    let local = info["local"].as_str().unwrap().to_string();
    let remote = info["remote"].as_str().unwrap().to_string();
    assert_eq!(remote, format!("127.0.0.1:{port}"));
    let comm = comm_of(&bin);
    let client = PeerInfo {
        pid: info["pid"].as_u64().unwrap() as u32,
        comm: comm.clone(),
        local: local.clone(),
        remote: remote.clone(),
        sent: want_sent.clone(),
        recv: want_recv.clone(),
    };
    let server =
        PeerInfo { pid: server_pid, comm, local: remote, remote: local, sent: want_recv, recv: want_sent };
    // Every data record of each end is BoringSSL plaintext of the one
    // connection (no ciphertext), exact and whole from byte 0.
    assert_exact_from(&cap, &client, "client", 0, "boringssl");
    assert_exact_from(&cap, &server, "server", 0, "boringssl");
    assert_echo_posts(&cap.of("http", client.pid), "client");
    assert_echo_posts(&cap.of("http", server_pid), "server");
    for reason in ["tls_unbound", "tls_socket_unknown", "ringbuf_full"] {
        assert_eq!(cap.dropped(reason), (0, 0), "{reason}");
    }
}

#[test]
fn boring_static_with_symbols_bodies_from_0_b_to_4_mib_exact_at_both_ends() {
    exact_at_both_ends("boringpeer", "by symbol");
}

#[test]
fn boring_static_stripped_bodies_from_0_b_to_4_mib_exact_at_both_ends() {
    exact_at_both_ends("boringpeer-stripped", "found by its error reports");
}

/// The finder's answer on the stripped build is the symbol table's answer
/// on the same code (stripping keeps every section where it was): the
/// evidence it uses picks the right functions, not merely some.
#[test]
fn boring_static_finder_agrees_with_the_symbol_table() {
    use nettap_sensor::probes::boringssl_static::{has_boringssl, locate, Method};
    let with_symbols = std::fs::read(peer("boringpeer")).unwrap();
    let stripped = std::fs::read(peer("boringpeer-stripped")).unwrap();
    assert!(has_boringssl(&with_symbols) && has_boringssl(&stripped));
    let (by_symbol, how) = locate(&with_symbols).unwrap();
    assert_eq!(how, Method::Symbols);
    let start = std::time::Instant::now();
    let (found, how) = locate(&stripped).unwrap();
    eprintln!("boringssl_static::locate without symbols: {:?} for {} bytes", start.elapsed(), stripped.len());
    assert_eq!(how, Method::Found);
    for f in ["SSL_write", "SSL_read", "SSL_do_handshake"] {
        assert_eq!(found[f].offset, by_symbol[f].offset, "{f}");
    }
    // No BIO pair in this program: bio_write is not looked for by name.
    assert!(!found.contains_key("bio_write") && !by_symbol.contains_key("bio_write"));
    // OpenSSL's libssl (source file ssl_lib.c) is not taken for BoringSSL.
    let openssl = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
    assert!(!has_boringssl(&openssl));
    // Nor is the sensor, whose code looks for the path (another sensor's
    // file is examined like any program); the cost of the search there.
    let sensor = std::fs::read(nettap_bin()).unwrap();
    let start = std::time::Instant::now();
    assert!(!has_boringssl(&sensor), "the sensor's file is taken for BoringSSL");
    eprintln!("has_boringssl on the sensor ({} bytes): {:?}", sensor.len(), start.elapsed());
}

/// A stripped program whose evidence no longer singles `SSL_write` out (a
/// copy of the stripped peer with its QUIC-misuse report's reason changed,
/// `mov edx, 0x42` → `0x43`, in an error path never run) is refused with
/// the reason, not probed at a guessed address: both ends run and talk,
/// and nothing of theirs is written but their connections (TLS records are
/// never written as data).
#[test]
fn boring_static_stripped_program_the_finder_cannot_single_out_is_refused() {
    use nettap_sensor::probes::boringssl_static::locate;
    let (by_symbol, _) = locate(&std::fs::read(peer("boringpeer")).unwrap()).unwrap();
    let mut data = std::fs::read(peer("boringpeer-stripped")).unwrap();
    let write_at = by_symbol["SSL_write"].offset as usize;
    let code = &mut data[write_at..write_at + 0x200];
    let at = code.windows(5).position(|w| w == [0xba, 0x42, 0, 0, 0]).expect("mov edx, 0x42 in SSL_write");
    code[at + 1] = 0x43;
    let e = locate(&data).unwrap_err();
    assert!(e.contains("SSL_write"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("boringpeer-changed");
    std::fs::write(&bin, &data).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let sensor = Sensor::start(&["--raw", "--port", &port.to_string()]);
    let srv = server(&bin, &pki, port);
    let info = client(&bin, &pki, port, &["--n", "3"]);
    let server_pid = srv.0.id();
    let client_pid = info["pid"].as_u64().unwrap() as u32;
    sensor.wait_for_record("the client's connection", |r| r["kind"] == "conn" && r["pid"] == client_pid);
    drop(srv);
    let cap = sensor.stop();

    let refused = cap.log.lines().find(|l| {
        l.contains("probe attached: failed")
            && l.contains("boringpeer-changed")
            && l.contains("SSL_write")
            && l.contains("not probed rather than guessed")
    });
    assert!(refused.is_some(), "no refusal naming the program and SSL_write:\n{}", cap.log);
    assert!(
        !cap.log.lines().any(|l| l.contains("boringpeer-changed") && l.contains("ok=true")),
        "a probe was attached to the changed program:\n{}",
        cap.log
    );
    for pid in [client_pid, server_pid] {
        assert!(cap.of("data", pid).is_empty(), "pid {pid}: data written without the TLS probes");
        assert!(cap.of("http", pid).is_empty(), "pid {pid}: plaintext seen without the TLS probes");
    }
}

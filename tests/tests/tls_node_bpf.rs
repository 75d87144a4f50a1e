//! TLS plaintext from Node.js: OpenSSL is linked into the `node` binary and
//! driven through memory BIOs (no syscalls inside SSL calls), so the socket
//! comes from the event loop's reads on the same thread. Client and server
//! are Node's own `https`, started after the sensor.

use nettap_e2e::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn node_peer() -> PathBuf {
    nettap_e2e::program("node_https.js")
}

fn node() -> Command {
    let out = Command::new("node").arg("--version").output();
    assert!(out.is_ok_and(|o| o.status.success()), "the Node.js TLS test needs `node` (Node.js 20) on PATH");
    Command::new("node")
}

fn assert_exchanges(records: &[&Value], sizes: &[usize], role: &str, port: u16) {
    assert_eq!(records.len(), sizes.len(), "{role}: one exchange per request: {records:#?}");
    let local: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["conn"]["local"].as_str().unwrap()).collect();
    assert_eq!(local.len(), 1, "{role}: one keep-alive connection");
    for (r, &n) in records.iter().zip(sizes) {
        assert_eq!(r["source"], "openssl", "{r}");
        assert_eq!(r["conn"]["tls"], true, "{r}");
        assert_eq!(r["conn"]["role"], role, "{r}");
        let server_end = if role == "client" { &r["conn"]["remote"] } else { &r["conn"]["local"] };
        assert_eq!(server_end, &format!("127.0.0.1:{port}"), "{r}");
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["path"], format!("/echo/{n}"));
        assert_eq!(r["request"]["authority"], format!("127.0.0.1:{port}"));
        assert_http_body(&r["request"], &pattern_body("req", n), role);
        assert_eq!(r["response"]["status"], 200);
        assert_http_body(&r["response"], &pattern_body("resp", n), role);
    }
}

#[test]
fn node_https_client_and_server_are_captured_exactly() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    // EXACT: the 4 MiB bodies go through SSL_write in one call each.
    let mut args = vec!["--port", port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    assert!(sensor_probed_node(&sensor), "node on PATH is probed at start-up");

    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut server = node()
        .arg(node_peer())
        .args(["server", "--port", port_s, "--ready"])
        .arg(&ready)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    let sizes = [0usize, 1024, 100 * 1024, 4 << 20];
    let sizes_s = sizes.map(|n| n.to_string()).join(",");
    let mut client = node()
        .arg(node_peer())
        .args(["client", "--port", port_s, "--sizes", &sizes_s, "--ca"])
        .arg(cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "node client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    assert_exchanges(&cap.of("http", client.id()), &sizes, "client", port);
    assert_exchanges(&cap.of("http", server.id()), &sizes, "server", port);
    for pid in [client.id(), server.id()] {
        assert!(cap.of("data", pid).is_empty(), "no ciphertext written as data for pid {pid}");
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

/// The `probe attached` lines name the node binary.
fn sensor_probed_node(sensor: &Sensor) -> bool {
    let log = std::fs::read_to_string(sensor.dir.path().join("log")).unwrap_or_default();
    let node = std::fs::canonicalize(
        String::from_utf8(Command::new("sh").args(["-c", "command -v node"]).output().unwrap().stdout)
            .unwrap()
            .trim(),
    )
    .unwrap();
    log.lines()
        .any(|l| l.contains("probe attached") && l.contains(node.to_str().unwrap()) && l.contains("SSL_read"))
}

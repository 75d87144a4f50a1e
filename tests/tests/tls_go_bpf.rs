//! TLS plaintext from Go's crypto/tls: a Go HTTPS server and client (the
//! same program, built by the test in several variants) exchange requests
//! over one HTTP/1.1 connection; both ends' exchanges must come from the
//! `go-tls` probes with the kernel's connection identity and no ciphertext.

use nettap_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn go_build(out: &Path, flags: &[&str]) {
    go_build_with(out, flags, &[]);
}

/// `go build` with extra environment (`GOTOOLCHAIN=go1.19.13` fetches that
/// release as a Go toolchain module the first time, then it is cached).
fn go_build_with(out: &Path, flags: &[&str], env: &[(&str, &str)]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/go/tlspeer");
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-buildvcs=false")
        .envs(env.iter().copied())
        .status()
        .expect("the Go toolchain (`go`) is required to build the Go test programs");
    assert!(status.success(), "go build {flags:?} failed");
}

fn assert_exchanges(records: &[&Value], role: &str, port: u16, n: usize) {
    let paths: Vec<&str> = records.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..n).map(|i| format!("/go{i}")).collect();
    assert_eq!(paths, want, "{role}: every request, in order");
    for r in records {
        assert_eq!(r["source"], "go-tls", "{role}");
        assert_eq!(r["conn"]["tls"], true);
        assert_eq!(r["conn"]["role"], role);
        let server_end = if role == "client" { &r["conn"]["remote"] } else { &r["conn"]["local"] };
        assert_eq!(server_end, &format!("127.0.0.1:{port}"));
        assert_eq!(r["protocol"], "http/1.1");
        assert_eq!(r["request"]["method"], "GET");
        assert_eq!(r["response"]["status"], 200, "{role}: {r}");
        let path = r["request"]["path"].as_str().unwrap();
        assert_eq!(r["response"]["body"], format!("go says: {path}"));
    }
    let conns: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["conn"]["local"].as_str().unwrap()).collect();
    assert_eq!(conns.len(), 1, "{role}: one keep-alive connection");
}

fn capture_variant(bin: &Path) {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let sensor = Sensor::start(&["--port", port_s]);
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut server = Command::new(bin)
        .args(["server", "-http1", "-addr", &format!("127.0.0.1:{port}"), "-ready"])
        .arg(&ready)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    // The program is probed when the server starts (examined on exec).
    sensor.wait_for_log(&["probe attached", "crypto/tls.(*Conn).Read", "(return)", "ok=true"]);
    let mut client = Command::new(bin)
        .args(["client", "-http1", "-n", "5", "-url", &format!("https://127.0.0.1:{port}/go"), "-ca"])
        .arg(cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "Go client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    assert_exchanges(&cap.of("http", client.id()), "client", port, 5);
    assert_exchanges(&cap.of("http", server.id()), "server", port, 5);
    for pid in [client.id(), server.id()] {
        assert!(cap.of("data", pid).is_empty(), "no ciphertext written for pid {pid}");
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
}

#[test]
fn go_tls_default_stripped_pie_nodwarf_and_nocgo_builds() {
    let dir = tempfile::tempdir().unwrap();
    let bin = |n: &str| -> PathBuf { dir.path().join(n) };
    go_build(&bin("default"), &[]);
    go_build(&bin("stripped"), &["-ldflags=-s -w"]);
    go_build(&bin("pie"), &["-buildmode=pie"]);
    go_build(&bin("nodwarf"), &["-ldflags=-w"]);
    go_build_with(&bin("nocgo"), &[], &[("CGO_ENABLED", "0")]);
    for variant in ["default", "stripped", "pie", "nodwarf", "nocgo"] {
        capture_variant(&bin(variant));
    }
}

#[test]
fn go_tls_bodies_from_0_b_to_4_mib_are_exact_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tlspeer");
    go_build(&bin, &[]);
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let mut args = vec!["--port", port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let ready = dir.path().join("ready");
    let mut server = Command::new(&bin)
        .args(["server", "-http1", "-addr", &format!("127.0.0.1:{port}"), "-ready"])
        .arg(&ready)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    sensor.wait_for_log(&["probe attached", "crypto/tls.(*Conn).Read", "(return)", "ok=true"]);
    let sizes = [0usize, 1024, 100 * 1024, 4 << 20];
    let sizes_s = sizes.map(|n| n.to_string()).join(",");
    let mut client = Command::new(&bin)
        .args(["client", "-http1", "-sizes", &sizes_s, "-url", &format!("https://127.0.0.1:{port}/"), "-ca"])
        .arg(cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "Go client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    for (pid, role) in [(client.id(), "client"), (server.id(), "server")] {
        let h = cap.of("http", pid);
        assert_eq!(h.len(), sizes.len(), "{role}: one exchange per size");
        for (r, &n) in h.iter().zip(&sizes) {
            assert_eq!(r["source"], "go-tls");
            assert_eq!(r["request"]["method"], "POST");
            assert_eq!(r["request"]["path"], format!("/echo/{n}"));
            assert_http_body(&r["request"], &pattern_body("req", n), role);
            assert_eq!(r["response"]["status"], 200, "{role}: /echo/{n}");
            assert_http_body(&r["response"], &pattern_body("resp", n), role);
        }
        assert!(cap.of("data", pid).is_empty(), "{role}: no ciphertext");
    }
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
}

#[test]
fn go_tls_from_older_go_releases() {
    let dir = tempfile::tempdir().unwrap();
    // Go 1.19 stripped: its pclntab has the 1.18-1.19 layout (magic 0xfffffff0).
    let go119 = dir.path().join("go119-stripped");
    go_build_with(&go119, &["-ldflags=-s -w"], &[("GOTOOLCHAIN", "go1.19.13")]);
    let go121 = dir.path().join("go121");
    go_build_with(&go121, &[], &[("GOTOOLCHAIN", "go1.21.13")]);
    for (bin, version) in [(&go119, "go1.19.13"), (&go121, "go1.21.13")] {
        let data = std::fs::read(bin).unwrap();
        let go =
            nettap_sensor::probes::golang::inspect(&data, &["crypto/tls.(*Conn).Read"]).unwrap().unwrap();
        assert_eq!(go.version, version);
        capture_variant(bin);
    }
}

#[test]
fn go_http2_client_and_server_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tlspeer");
    go_build(&bin, &[]);
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let sensor = Sensor::start(&["--port", port_s]);
    let ready = dir.path().join("ready");
    // Go's net/http speaks HTTP/2 over TLS by default (ALPN h2).
    let mut server = Command::new(&bin)
        .args(["server", "-addr", &format!("127.0.0.1:{port}"), "-ready"])
        .arg(&ready)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    sensor.wait_for_log(&["probe attached", "crypto/tls.(*Conn).Read", "(return)", "ok=true"]);
    let mut client = Command::new(&bin)
        .args(["client", "-n", "3", "-url", &format!("https://127.0.0.1:{port}/h2-"), "-ca"])
        .arg(cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "Go client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    for (pid, role) in [(client.id(), "client"), (server.id(), "server")] {
        let h = cap.of("http", pid);
        let paths: Vec<&str> = h.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/h2-0", "/h2-1", "/h2-2"], "{role}");
        for r in h {
            assert_eq!(r["protocol"], "h2", "{role}");
            assert_eq!(r["source"], "go-tls");
            assert_eq!(r["request"]["authority"], format!("127.0.0.1:{port}"));
            assert_eq!(r["response"]["status"], 200);
            let path = r["request"]["path"].as_str().unwrap();
            assert_eq!(r["response"]["body"], format!("go says: {path}"));
        }
        assert!(cap.of("data", pid).is_empty(), "{role}: every frame understood");
    }
}

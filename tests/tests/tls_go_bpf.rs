//! TLS plaintext from Go's crypto/tls: a Go HTTPS server and client (the
//! same program, built by the test in several variants) exchange requests
//! over one HTTP/1.1 connection; both ends' exchanges must come from the
//! `go-tls` probes with the kernel's connection identity and no ciphertext.

use nettap_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Starts `bin` as the HTTPS server on `port` (HTTP/1.1 only with `http1`)
/// and waits until the sensor has probed it.
fn go_server(bin: &Path, sensor: &Sensor, port: u16, tls: &TlsSetup, http1: bool) -> std::process::Child {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut args = vec!["server".to_string(), "-addr".into(), format!("127.0.0.1:{port}"), "-ready".into()];
    args.push(ready.to_str().unwrap().into());
    if http1 {
        args.push("-http1".into());
    }
    let mut server =
        Command::new(bin).args(&args).arg("-cert").arg(&tls.cert).arg("-key").arg(&tls.key).spawn().unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    sensor.wait_for_log(&["probe attached", "crypto/tls.(*Conn).Read", READ_SITE, "ok=true"]);
    server
}

/// Where Read's bytes are taken: x86_64 probes its copy of the decrypted
/// record (a `call`, emulated), arm64 its `ret`s (simulated there).
const READ_SITE: &str = if cfg!(target_arch = "x86_64") { "(copy)" } else { "(return)" };

/// The test program built with the machine's Go and no flags, in a
/// scratch directory that lives as long as it is held.
fn default_tlspeer() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tlspeer");
    go_build(&bin, &[], &[]);
    (dir, bin)
}

/// Runs `bin client -http1 -url https://127.0.0.1:PORT/go -ca CERT ARGS`
/// to success; its pid.
fn go_client(bin: &Path, tls: &TlsSetup, args: &[&str]) -> u32 {
    let mut client = Command::new(bin)
        .args(["client", "-http1", "-url", &format!("https://127.0.0.1:{}/go", tls.port), "-ca"])
        .arg(&tls.cert)
        .args(args)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "Go client").success());
    client.id()
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
    let tls = TlsSetup::new();
    let port = tls.port;
    let sensor = Sensor::start(&["--port", &tls.port_s]);
    // The program is probed when the server starts (examined on exec).
    let mut server = go_server(bin, &sensor, port, &tls, true);
    let client = go_client(bin, &tls, &["-n", "5"]);
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    assert_exchanges(&cap.of("http", client), "client", port, 5);
    assert_exchanges(&cap.of("http", server.id()), "server", port, 5);
    for pid in [client, server.id()] {
        assert!(cap.of("data", pid).is_empty(), "no ciphertext written for pid {pid}");
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
}

/// The stripped build alone: what the kernel matrix runs in its guest,
/// where every build and sensor start costs ten times as much.
#[test]
fn go_tls_stripped_build() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("stripped");
    go_build(&bin, &["-ldflags=-s -w"], &[]);
    capture_variant(&bin);
}

/// One image, two containers: two overlay mounts of the layer that holds
/// the program, the server run from one, the client from the other. The
/// kernel sets a uprobe on the layer's file whichever mount names it, so
/// the sensor probes it once (probed through both mounts, every call would
/// run its programs twice); both ends are exact.
#[test]
fn a_go_program_in_two_containers_of_one_image_is_probed_once() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    go_build(&layer.join("tlspeer"), &["-ldflags=-s -w"], &[]);
    let (one, two) = (Overlay::new(dir.path(), &layer, "1"), Overlay::new(dir.path(), &layer, "2"));
    let tls = TlsSetup::new();
    let port = tls.port;
    let sensor = Sensor::start(&["--port", &tls.port_s]);
    let mut server = go_server(&one.at.join("tlspeer"), &sensor, port, &tls, true);
    let client = go_client(&two.at.join("tlspeer"), &tls, &["-n", "5"]);
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    let write = ["probe attached", "crypto/tls.(*Conn).Write", "ok=true"];
    let attached: Vec<&str> = cap.log.lines().filter(|l| write.iter().all(|w| l.contains(w))).collect();
    assert!(!attached.is_empty(), "{}", cap.log);
    let targets: std::collections::BTreeSet<&str> =
        attached.iter().filter_map(|l| l.split("target=").nth(1)?.split_whitespace().next()).collect();
    assert_eq!(targets.len(), 1, "probed through one mount only: {attached:#?}");
    assert_exchanges(&cap.of("http", client), "client", port, 5);
    assert_exchanges(&cap.of("http", server.id()), "server", port, 5);
}

/// An overlay mount of `lower` (as a container's root), unmounted when dropped.
struct Overlay {
    at: PathBuf,
}

impl Overlay {
    fn new(dir: &Path, lower: &Path, name: &str) -> Overlay {
        let [upper, work, at] = ["upper", "work", "root"].map(|d| dir.join(format!("{d}{name}")));
        for d in [&upper, &work, &at] {
            std::fs::create_dir(d).unwrap();
        }
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        let st =
            Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&at).status().unwrap();
        assert!(st.success(), "cannot mount an overlay at {}", at.display());
        Overlay { at }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[test]
fn go_tls_default_stripped_pie_nodwarf_and_nocgo_builds() {
    let dir = tempfile::tempdir().unwrap();
    let bin = |n: &str| -> PathBuf { dir.path().join(n) };
    go_build(&bin("default"), &[], &[]);
    go_build(&bin("stripped"), &["-ldflags=-s -w"], &[]);
    go_build(&bin("pie"), &["-buildmode=pie"], &[]);
    go_build(&bin("nodwarf"), &["-ldflags=-w"], &[]);
    go_build(&bin("nocgo"), &[], &[("CGO_ENABLED", "0")]);
    for variant in ["default", "stripped", "pie", "nodwarf", "nocgo"] {
        capture_variant(&bin(variant));
    }
}

#[test]
fn go_tls_bodies_from_0_b_to_4_mib_are_exact_both_ways() {
    let (_dir, bin) = default_tlspeer();
    let tls = TlsSetup::new();
    let (cert, port) = (&tls.cert, tls.port);
    let mut args = vec!["--port", tls.port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let mut server = go_server(&bin, &sensor, port, &tls, true);
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
    go_build(&go119, &["-ldflags=-s -w"], &[("GOTOOLCHAIN", "go1.19.13")]);
    let go121 = dir.path().join("go121");
    go_build(&go121, &[], &[("GOTOOLCHAIN", "go1.21.13")]);
    for (bin, version) in [(&go119, "go1.19.13"), (&go121, "go1.21.13")] {
        let data = std::fs::read(bin).unwrap();
        let go = nettap_sensor::probes::golang::inspect(&data, &["crypto/tls.(*Conn).Read"], &[])
            .unwrap()
            .unwrap();
        assert_eq!(go.version, version);
        capture_variant(bin);
    }
}

#[test]
fn go_http2_client_and_server_over_tls() {
    let (_dir, bin) = default_tlspeer();
    let tls = TlsSetup::new();
    let (cert, port) = (&tls.cert, tls.port);
    let sensor = Sensor::start(&["--port", &tls.port_s]);
    // Go's net/http speaks HTTP/2 over TLS by default (ALPN h2).
    let mut server = go_server(&bin, &sensor, port, &tls, false);
    let mut client = Command::new(&bin)
        .args(["client", "-n", "3", "-url", &format!("https://127.0.0.1:{port}/h2-"), "-ca"])
        .arg(cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "Go client").success());
    // The client has the last answer once the server's Write put it on the
    // socket, a moment before that Write returns (and its return probe
    // fires): the server is killed only after its last exchange is written.
    let server_pid = server.id();
    sensor.wait_for_record("the server's last exchange", |r| {
        r["kind"] == "http" && r["pid"] == server_pid && r["request"]["path"] == "/h2-2"
    });
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    for (pid, role) in [(client.id(), "client"), (server.id(), "server")] {
        let h = cap.of("http", pid);
        let paths: Vec<&str> = h.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
        let about = cap.about(pid);
        assert_eq!(paths, ["/h2-0", "/h2-1", "/h2-2"], "{role}: {about}");
        for r in h {
            assert_eq!(r["protocol"], "h2", "{role}: {about}");
            assert_eq!(r["source"], "go-tls");
            assert_eq!(r["request"]["authority"], format!("127.0.0.1:{port}"));
            assert_eq!(r["response"]["status"], 200);
            let path = r["request"]["path"].as_str().unwrap();
            assert_eq!(r["response"]["body"], format!("go says: {path}"));
        }
        assert!(cap.of("data", pid).is_empty(), "{role}: every frame understood; {about}");
    }
}

/// Each client is a fresh copy of the program (a file the sensor has never
/// seen) run at once, without waiting for the sensor: the exec gate holds
/// it until its probes are in place, so its first and only request is there.
#[test]
fn a_go_program_started_after_the_sensor_is_captured_from_its_first_request() {
    let (dir, bin) = default_tlspeer();
    let tls = TlsSetup::new();
    let port = tls.port;
    let sensor = Sensor::start(&["--port", &tls.port_s]);
    sensor.wait_for_log(&["exec gate on"]);
    let mut server = go_server(&bin, &sensor, port, &tls, true);
    let mut clients = Vec::new();
    for i in 0..3 {
        let copy = dir.path().join(format!("client{i}"));
        std::fs::copy(&bin, &copy).unwrap();
        clients.push(go_client(&copy, &tls, &["-n", "1"]));
    }
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();
    for pid in clients {
        assert_exchanges(&cap.of("http", pid), "client", port, 1);
        assert!(cap.of("data", pid).is_empty(), "no ciphertext for pid {pid}");
        let held = format!("probes attached to a Go program pid={pid} ");
        assert!(cap.log.lines().any(|l| l.contains(&held) && l.contains("held=true")), "{held}: {}", cap.log);
    }
}

/// A client whose TLS runs over a wrapper of its TCP connection (what
/// metrics and proxy libraries do): the wrapper is not a *net.TCPConn, so
/// its plaintext is counted as `go_conn_not_tcp`, never read through a
/// layout it does not have; the server's side is captured as usual.
#[test]
fn go_tls_over_a_wrapped_conn_is_counted_not_misread() {
    let (_dir, bin) = default_tlspeer();
    let tls = TlsSetup::new();
    let port = tls.port;
    let sensor = Sensor::start(&["--port", &tls.port_s]);
    let mut server = go_server(&bin, &sensor, port, &tls, true);
    let client = go_client(&bin, &tls, &["-wrap", "-n", "2"]);
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();
    assert!(cap.of("http", client).is_empty(), "no exchange from a misread socket");
    let (count, bytes) = cap.dropped("go_conn_not_tcp");
    // Two requests and two answers at least, each its full plaintext.
    assert!(count >= 4 && bytes > 2 * "go says: /go0".len() as u64, "{count} {bytes}");
    assert_exchanges(&cap.of("http", server.id()), "server", port, 2);
}

/// A Read that returns plaintext after its connection was closed by another
/// goroutine (a Close racing a Read that is finishing): made deterministic
/// by `tlspeer closeread`, whose client Read closes the connection itself,
/// inside crypto/tls, after the bytes were read from the socket. The
/// socket is the one the call started on, so the bytes are captured, not
/// counted as `tls_socket_unknown`.
#[test]
fn a_go_tls_read_returning_after_its_conn_was_closed_is_captured() {
    let tls = TlsSetup::new();
    let (cap, pid) = closeread(&tls, &tls.port_s);

    let answer = "plaintext read after its connection was closed";
    let data = cap.of("data", pid);
    let read: Vec<&&Value> =
        data.iter().filter(|r| r["direction"] == "recv" && payload(r) == answer.as_bytes()).collect();
    assert_eq!(read.len(), 1, "the client's last read, once: {data:#?}");
    assert_eq!(read[0]["source"], "go-tls");
    assert_eq!(read[0]["conn"]["tls"], true);
    assert_eq!(read[0]["conn"]["remote"], format!("127.0.0.1:{}", tls.port));
    let ping = data.iter().filter(|r| r["direction"] == "recv" && payload(r) == b"ping\n").count();
    assert_eq!(ping, 1, "the server's read: {data:#?}");
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("go_conn_not_tcp"), (0, 0));
}

/// The same calls on a port `--port` does not want (now filtered at the
/// entry probe): not captured, nothing counted.
#[test]
fn go_tls_calls_on_unwanted_ports_are_neither_captured_nor_counted() {
    let tls = TlsSetup::new();
    let other = free_port().to_string();
    let (cap, pid) = closeread(&tls, &other);
    assert!(cap.records.iter().all(|r| r["pid"] != pid), "nothing of pid {pid}");
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("go_conn_not_tcp"), (0, 0));
}

/// Runs `tlspeer closeread` on `tls.port` under a sensor capturing `port`;
/// what the sensor wrote, and the program's pid.
fn closeread(tls: &TlsSetup, port: &str) -> (Capture, u32) {
    let (_dir, bin) = default_tlspeer();
    let sensor = Sensor::start(&["--port", port]);
    // A file the sensor has not seen: held at exec until it is probed.
    sensor.wait_for_log(&["exec gate on"]);
    let mut peer = Command::new(&bin)
        .args(["closeread", "-addr", &format!("127.0.0.1:{}", tls.port), "-cert"])
        .arg(&tls.cert)
        .arg("-key")
        .arg(&tls.key)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut peer, "Go closeread").success());
    (sensor.stop(), peer.id())
}

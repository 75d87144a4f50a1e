//! Probed files come and go (issue 27): TLS clients each with a fresh copy
//! of libssl, and Go programs each a new build (a new file), as a CI runner
//! or `go run` makes them. Every exchange is captured; a copy's probes stay
//! while a process maps it, even deleted; once it is deleted and unmapped,
//! its probes go, and the sensor holds nothing of it: no descriptor, no
//! link, no mapping.

use nettap_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Fresh libssl copies, and as many fresh Go builds.
const ROUNDS: usize = 24;
/// Requests per TLS client.
const REQUESTS: usize = 2;

/// Whether this run's sensor uses uprobe_multi links (whose fdinfo names
/// their file); `NETTAP_UPROBE_MULTI=0` takes the per-point path.
fn uprobe_multi_here() -> bool {
    std::env::var("NETTAP_UPROBE_MULTI").as_deref() != Ok("0")
}

/// A Python TLS client (tls_late.py) on a fresh copy of libssl in `dir`,
/// let go once the sensor said it probed that copy; `delete_while_running`
/// deletes the copy before the go-ahead. Its pid.
fn libssl_client(sensor: &Sensor, tls: &TlsSetup, dir: &Path, delete_while_running: bool) -> u32 {
    std::fs::create_dir(dir).unwrap();
    for lib in ["libssl.so.3", "libcrypto.so.3"] {
        std::fs::copy(system_lib_dir().join(lib), dir.join(lib)).unwrap();
    }
    let (loaded, go) = (dir.with_extension("loaded"), dir.with_extension("go"));
    let mut client = Command::new(python())
        .arg(program("tls_late.py"))
        .args([&tls.port_s, tls.cert.to_str().unwrap(), loaded.to_str().unwrap(), go.to_str().unwrap()])
        .arg(REQUESTS.to_string())
        .env("LD_LIBRARY_PATH", dir)
        .spawn_guarded();
    wait_for_file(&loaded, || client.try_wait().unwrap().is_none());
    // Probes on a library mapped after start-up come a few ms after the
    // mapping; this test is about their end, so the client waits for them.
    sensor.wait_for_log(&["mapped after start-up", &format!("{}/libssl.so.3", dir.display())]);
    if delete_while_running {
        std::fs::remove_dir_all(dir).unwrap();
        // Longer than the sensor's 1 s look at deleted files after an exit.
        let exits = Command::new("true").status().unwrap();
        assert!(exits.success());
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            sensor.log_count(&["probes detached from a deleted file", &dir.display().to_string()]),
            0,
            "a deleted copy still mapped keeps its probes"
        );
        let (files, links, mappings) = held_under(sensor.pid(), dir);
        assert_eq!((files, mappings), (1, 1), "the sensor holds the deleted copy once");
        assert!(links > 0 || !uprobe_multi_here(), "its links are there");
    }
    std::fs::write(&go, b"").unwrap();
    assert!(wait_child(&mut client, "TLS client on a fresh libssl").success());
    if !delete_while_running {
        std::fs::remove_dir_all(dir).unwrap();
    }
    client.id()
}

/// A Go client from a fresh copy of `built` (a new file, as a new build is). Its pid.
fn go_client(built: &Path, copy: &Path, tls: &TlsSetup, go_port: u16) -> u32 {
    std::fs::copy(built, copy).unwrap();
    let mut client = Command::new(copy)
        .args(["client", "-http1", "-n", &REQUESTS.to_string(), "-ca"])
        .arg(&tls.cert)
        .args(["-url", &format!("https://127.0.0.1:{go_port}/go")])
        .spawn_guarded();
    assert!(wait_child(&mut client, "Go client of a new build").success());
    std::fs::remove_file(copy).unwrap();
    client.id()
}

#[test]
fn fresh_libssl_copies_and_go_builds_lose_their_probes_when_gone() {
    let tls = TlsSetup::new();
    let build = tempfile::tempdir().unwrap();
    let built = build.path().join("tlspeer");
    go_build(&built, &[], &[]);

    // Python's TLS server (the system libssl) for the Python clients, Go's for the Go ones.
    let ready = build.path().join("py.ready");
    let mut py_server = Command::new(python())
        .arg(program("http_peer.py"))
        .args(["server", "--port", &tls.port_s, "--ready"])
        .arg(&ready)
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .spawn_guarded();
    wait_for_file(&ready, || py_server.try_wait().unwrap().is_none());
    let go_port = free_port();
    let go_ready = build.path().join("go.ready");
    let mut go_server = Command::new(&built)
        .args(["server", "-http1", "-addr", &format!("127.0.0.1:{go_port}"), "-ready"])
        .arg(&go_ready)
        .arg("-cert")
        .arg(&tls.cert)
        .arg("-key")
        .arg(&tls.key)
        .spawn_guarded();
    wait_for_file(&go_ready, || go_server.try_wait().unwrap().is_none());

    // The fresh copies live here, and nothing else.
    let work = tempfile::tempdir().unwrap();
    let go_port_s = go_port.to_string();
    let sensor = Sensor::start(&["--port", &tls.port_s, "--port", &go_port_s]);
    let began = Instant::now();
    let (mut py_pids, mut go_pids) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let dir = work.path().join(format!("libs{i}"));
        py_pids.push(libssl_client(&sensor, &tls, &dir, i == ROUNDS - 1));
        go_pids.push(go_client(&built, &work.path().join(format!("tlspeer{i}")), &tls, go_port));
    }
    let took = began.elapsed();
    let start = Instant::now();
    let released = || sensor.log_count(&["probes detached from a deleted"]);
    while released() < 2 * ROUNDS {
        assert!(start.elapsed() < TIMEOUT, "{} of {} files lost their probes", released(), 2 * ROUNDS);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The links close on a thread of their own after the release is logged.
    let start = Instant::now();
    while held_under(sensor.pid(), work.path()) != (0, 0, 0) && start.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = held_under(sensor.pid(), work.path());
    let cap = sensor.stop();
    eprintln!("{ROUNDS} rounds in {:.1} s", took.as_secs_f64());
    assert_eq!(after, (0, 0, 0), "(files, links, mappings) of the deleted copies the sensor still holds");
    let lines = |what: &str| cap.log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("probes detached from a deleted file no process maps"), ROUNDS);
    assert_eq!(lines("probes detached from a deleted Go program no process runs"), ROUNDS);

    // Every exchange of every client, exactly.
    for pid in &py_pids {
        let http = cap.of("http", *pid);
        let paths: Vec<&str> = http.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..REQUESTS).map(|i| format!("/late{i}")).collect();
        assert_eq!(paths, want, "python client {pid}");
        for r in &http {
            assert_eq!(r["source"], "openssl");
            assert_eq!(r["conn"]["role"], "client");
            let path = r["request"]["path"].as_str().unwrap();
            assert_eq!(r["response"]["body"], format!("{{\"path\": \"{path}\"}}"));
        }
        assert!(cap.of("data", *pid).is_empty(), "no ciphertext of {pid}");
    }
    for pid in &go_pids {
        let http = cap.of("http", *pid);
        let paths: Vec<&str> = http.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..REQUESTS).map(|i| format!("/go{i}")).collect();
        assert_eq!(paths, want, "Go client {pid}");
        for r in &http {
            assert_eq!(r["source"], "go-tls");
            assert_eq!(r["conn"]["remote"], format!("127.0.0.1:{go_port}"));
            let path = r["request"]["path"].as_str().unwrap();
            assert_eq!(r["response"]["body"], format!("go says: {path}"));
        }
    }
}

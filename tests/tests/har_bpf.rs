//! `--format har`: the exchanges of real HTTP/1.1 traffic, written as a HAR
//! 1.2 document that a parser we did not write (haralyzer, from PyPI) loads,
//! with each entry equal to what was sent.

use nettap_e2e::*;
use serde_json::Value;
use std::process::{Command, Stdio};

#[test]
fn har_of_real_exchanges_loads_in_haralyzer() {
    let port = free_port();
    let port_s = port.to_string();
    let (mut server, dir) = http_peer_server(port);
    let har = dir.path().join("x.har");
    let peer = program("http_peer.py");

    let sensor_ready = dir.path().join("sensor.ready");
    let mut sensor = Command::new(nettap_bin())
        .args(["capture", "--format", "har", "--port", &port_s, "--out"])
        .arg(&har)
        .arg("--ready-file")
        .arg(&sensor_ready)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&sensor_ready, || sensor.try_wait().unwrap().is_none());
    let mut client = Command::new(python()).arg(&peer).args(["client", "--port", &port_s]).spawn().unwrap();
    assert!(wait_child(&mut client, "http client").success());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sensor.id() as i32, libc::SIGINT) };
    assert!(wait_child(&mut sensor, "nettap").success());
    let _ = server.kill();
    let _ = server.wait();

    let out =
        Command::new(venv_python()).arg(nettap_e2e::program("har_check.py")).arg(&har).output().unwrap();
    assert!(out.status.success(), "haralyzer refused the HAR: {}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let client_pid = client.id() as u64;
    let mine: Vec<&Value> = entries.iter().filter(|e| e["pid"] == client_pid).collect();
    let urls: Vec<&str> = mine.iter().map(|e| e["url"].as_str().unwrap()).collect();
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(
        urls,
        vec![
            format!("{base}/gzip"),
            format!("{base}/echo?mode=chunked"),
            format!("{base}/head"),
            format!("{base}/chunked"),
            format!("{base}/echo"),
            "http://pipe/p1".into(),
            "http://pipe/p2".into(),
            "http://up/upgrade".into(),
        ]
    );
    let by_url = |u: &str| mine.iter().find(|e| e["url"] == u).unwrap();
    let gz = by_url(&format!("{base}/gzip"));
    assert_eq!(gz["status"], 200);
    assert_eq!(gz["response_text"], "hello gzip ".repeat(100));
    assert_eq!(gz["response_mime"], "text/plain");
    assert_eq!(gz["request_headers"]["accept-encoding"], "gzip");
    let post = by_url(&format!("{base}/echo?mode=chunked"));
    assert_eq!((post["method"].as_str(), post["status"].as_u64()), (Some("POST"), Some(201)));
    assert_eq!(post["request_text"], "first,second,third");
    assert_eq!(post["response_text"], "got 18: first,second,third");
    assert_eq!(by_url("http://up/upgrade")["status"], 101);
    // Both processes' views are in the file.
    assert_eq!(entries.len(), 2 * mine.len());
}

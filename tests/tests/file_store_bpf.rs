//! `nettap capture --out-dir`: under sustained HTTP traffic with known
//! nonces, the records stay in the store (directory 0700, files 0600), within
//! the configured bound, the newest kept whole and in order, what went said
//! by `drop` records and log lines; and not one nonce is in the sensor's log.

use nettap_e2e::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

const REQUESTS: usize = 400;
const MAX_BYTES: u64 = 256 << 10;
const MAX_FILES: usize = 4;

/// POSTs `body` on the keep-alive connection and reads the answer.
fn post(conn: &mut BufReader<std::net::TcpStream>, body: &str) {
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut answer = vec![0u8; len];
    conn.read_exact(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).ends_with(body));
}

#[test]
fn records_stay_in_the_bounded_private_store_and_out_of_the_log() {
    let port = free_port();
    let _server = http_peer_server(port);
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("var/lib/nettap/records");
    let (ready, log) = (scratch.path().join("ready"), scratch.path().join("log"));
    let mut sensor = jvm::KillOnDrop(
        Command::new(nettap_bin())
            .args(["capture", "--port", &port.to_string(), "--out-dir"])
            .arg(&store)
            .args(["--out-max-bytes", &MAX_BYTES.to_string(), "--out-max-files", &MAX_FILES.to_string()])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_file(&ready, || sensor.try_wait().unwrap().is_none());

    let tag = format!("NONCE{}X", free_port());
    let nonces: Vec<String> = (0..REQUESTS).map(|i| format!("{tag}{i:05}-{}", "p".repeat(1500))).collect();
    let mut conn = BufReader::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    for n in &nonces {
        post(&mut conn, n);
    }
    drop(conn);
    std::thread::sleep(std::time::Duration::from_secs(2)); // flushed every second
                                                           // SAFETY: signalling our own child.
    unsafe { libc::kill(sensor.id() as i32, libc::SIGINT) };
    assert!(wait_child(&mut sensor, "nettap").success());

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains(&tag), "a captured payload reached the log:\n{log}");
    assert!(log.contains("records file store full"), "{log}");

    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
    let mut files: Vec<_> = std::fs::read_dir(&store).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() <= MAX_FILES, "{files:?}");
    let mut total = 0;
    let (mut kept, mut dropped) = (Vec::new(), 0);
    for f in &files {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "{}", f.display());
        total += m.len();
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("whole records only");
            match r["kind"].as_str() {
                // Each exchange is there once per end: the server's.
                Some("http") if r["conn"]["role"] == "server" => {
                    let body = r["request"]["body"].as_str().unwrap();
                    kept.push(nonces.iter().position(|n| n == body).expect("a request sent"));
                }
                Some("drop") if r["reason"] == "file_store_evicted" => {
                    dropped += r["count"].as_u64().unwrap()
                }
                _ => {}
            }
        }
    }
    // One record's overshoot at most (about 3.2 KiB each here).
    assert!(total <= MAX_BYTES + 4096, "{total} bytes in {files:?}");
    assert!(kept.len() > 10 && kept.len() < REQUESTS, "{} of {REQUESTS} kept", kept.len());
    let first = kept[0];
    assert_eq!(kept, (first..REQUESTS).collect::<Vec<_>>(), "the newest, in order, none missing");
    assert!(dropped > 0, "what went is said in a drop record");
}

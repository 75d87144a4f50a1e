//! The acceptance check: `nettap capture --out f.jsonl --raw` captures
//! a curl request against `python3 -m http.server` byte for byte, both
//! directions; and plain `nettap capture` shows the exchange on the terminal.

use nettap_e2e::*;
use std::process::{Command, Stdio};

struct HttpServer {
    child: std::process::Child,
    port: u16,
    _root: tempfile::TempDir,
    body: Vec<u8>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let root = tempfile::tempdir().unwrap();
        // Text and binary, larger than one 16 KiB chunk.
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(root.path().join("file.bin"), &body).unwrap();
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .current_dir(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < TIMEOUT, "http.server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpServer { child, port, _root: root, body }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(url: &str, out: &std::path::Path) -> u32 {
    let mut child = Command::new("curl")
        .args(["-sS", "--fail", "-o"])
        .arg(out)
        .arg(url)
        .spawn()
        .expect("curl is required");
    let pid = child.id();
    assert!(wait_child(&mut child, "curl").success());
    pid
}

#[test]
fn curl_against_http_server_byte_for_byte() {
    let server = HttpServer::start();
    let sensor = Sensor::start(&["--raw"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/file.bin", server.port);
    let curl_pid = curl(&url, &dir.path().join("got"));
    let cap = sensor.stop();
    assert_eq!(std::fs::read(dir.path().join("got")).unwrap(), server.body);

    let sent = cap.stream(curl_pid, "send");
    let recv = cap.stream(curl_pid, "recv");
    assert!(sent.gaps.is_empty() && recv.gaps.is_empty());
    let request = String::from_utf8(sent.bytes.clone()).unwrap();
    assert!(
        request.starts_with(&format!("GET /file.bin HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", server.port)),
        "{request}"
    );
    assert!(request.ends_with("\r\n\r\n"), "{request}");
    // The response: status line, headers, then exactly the file.
    let split = recv.bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("header end") + 4;
    assert!(recv.bytes.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert!(recv.bytes[split..] == server.body[..], "body bytes differ");

    // The server's view is the mirror image, byte for byte.
    let server_pid = server.child.id();
    assert_eq!(cap.stream(server_pid, "recv").bytes, sent.bytes);
    assert_eq!(cap.stream(server_pid, "send").bytes, recv.bytes);
    for r in cap.of("data", curl_pid) {
        assert_eq!(r["comm"], "curl");
        assert_eq!(r["conn"]["remote"], format!("127.0.0.1:{}", server.port));
        assert_eq!(r["conn"]["role"], "client");
    }

    // With --raw the exchange is an `http` record as well, equal to what was sent.
    let http = cap.of("http", curl_pid);
    assert_eq!(http.len(), 1, "{http:?}");
    let h = http[0];
    assert_eq!(h["protocol"], "http/1.1");
    assert_eq!(h["request"]["method"], "GET");
    assert_eq!(h["request"]["path"], "/file.bin");
    assert_eq!(h["request"]["authority"], format!("127.0.0.1:{}", server.port));
    assert_eq!(h["response"]["status"], 200);
    let body = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        h["response"]["body_b64"].as_str().expect("a binary body is base64"),
    )
    .unwrap();
    assert!(body == server.body, "response body differs");
    let ua = h["request"]["headers"].as_array().unwrap().iter().find(|kv| kv[0] == "User-Agent").unwrap();
    assert!(ua[1].as_str().unwrap().starts_with("curl/"));
}

#[test]
fn terminal_summary_shows_the_exchange() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut sensor = Command::new(nettap_bin())
        .args(["capture", "--ready-file"])
        .arg(&ready)
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready, || sensor.try_wait().unwrap().is_none());
    let url = format!("http://127.0.0.1:{}/file.bin?x=1", server.port);
    let curl_pid = curl(&url, &dir.path().join("got"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sensor.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut sensor, "nettap after SIGTERM").success());
    let text = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let want = format!("GET     http://127.0.0.1:{}/file.bin?x=1  200  ", server.port);
    let line = text
        .lines()
        .find(|l| l.contains(&want) && l.contains(&format!("curl[{curl_pid}]")))
        .unwrap_or_else(|| panic!("no summary line for curl in:\n{text}"));
    assert!(line.contains(" ms "), "{line}");
}

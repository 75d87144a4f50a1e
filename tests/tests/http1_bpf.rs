//! HTTP/1.x end to end: a real Python HTTP/1.1 server and client over
//! keep-alive, chunked uploads and responses, `Expect: 100-continue`, gzip,
//! HEAD, pipelining and an upgrade. The `http` records must say exactly
//! what was sent; nothing HTTP may also appear as `data` (without --raw),
//! and the bytes after the upgrade must.

use nettap_e2e::*;
use serde_json::Value;
use std::process::Command;

fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    let headers = msg["headers"].as_array()?;
    headers.iter().find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))?[1].as_str()
}

#[test]
fn python_http11_client_and_server() {
    let port = free_port();
    let port_s = port.to_string();
    let (mut server, _dir) = http_peer_server(port);
    let peer = program("http_peer.py");
    let sensor = Sensor::start(&["--port", &port_s]);
    let mut client = Command::new(python()).arg(&peer).args(["client", "--port", &port_s]).spawn().unwrap();
    assert!(wait_child(&mut client, "http client").success(), "the client checks its own answers");
    let client_pid = client.id();
    let cap = sensor.stop();
    let _ = server.kill();
    let _ = server.wait();

    let http: Vec<&Value> = cap.of("http", client_pid);
    let summary: Vec<(String, String, u64)> = http
        .iter()
        .map(|r| {
            (
                r["request"]["method"].as_str().unwrap().to_string(),
                r["request"]["path"].as_str().unwrap().to_string(),
                r["response"]["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect: Vec<(String, String, u64)> = [
        ("GET", "/gzip", 200),
        ("POST", "/echo?mode=chunked", 201),
        ("HEAD", "/head", 200),
        ("GET", "/chunked", 200),
        ("POST", "/echo", 201),
        ("GET", "/p1", 200),
        ("GET", "/p2", 200),
        ("GET", "/upgrade", 101),
    ]
    .iter()
    .map(|(m, p, s)| (m.to_string(), p.to_string(), *s))
    .collect();
    assert_eq!(summary, expect, "one exchange per request, in order");

    let by_path = |p: &str| *http.iter().find(|r| r["request"]["path"] == p).unwrap();
    let gz = by_path("/gzip");
    assert_eq!(gz["response"]["body"], "hello gzip ".repeat(100), "gzip decoded");
    assert_eq!(
        header(&gz["response"], "content-encoding"),
        Some("gzip"),
        "original encoding kept in the headers"
    );
    assert_eq!(gz["request"]["authority"], format!("127.0.0.1:{port}"));
    assert_eq!(header(&gz["request"], "accept-encoding"), Some("gzip"));
    assert_eq!(gz["protocol"], "http/1.1");
    assert!(gz["latency_ns"].as_u64().unwrap() > 0);

    let up = by_path("/echo?mode=chunked");
    assert_eq!(up["request"]["body"], "first,second,third", "chunked upload decoded");
    assert_eq!(up["response"]["body"], "got 18: first,second,third");
    assert_eq!(by_path("/head")["response"]["body"], "", "HEAD answers have no body");
    assert_eq!(header(&by_path("/head")["response"], "content-length"), Some("1234"));
    assert_eq!(by_path("/chunked")["response"]["body"], "first,second,third", "chunked response decoded");
    let expect_100 = by_path("/echo");
    assert_eq!(header(&expect_100["request"], "expect"), Some("100-continue"));
    assert_eq!(expect_100["response"]["status"], 201, "the interim 100 is not the answer");
    assert_eq!(expect_100["response"]["body"], "got 11: with expect");
    assert_eq!(by_path("/p2")["response"]["body"], "{\"path\": \"/p2\"}");
    assert_eq!(by_path("/p2")["request"]["authority"], "pipe");

    // Without --raw, HTTP bytes are not repeated as data; after the upgrade they are data.
    let mut data: Vec<(String, Vec<u8>)> = cap
        .of("data", client_pid)
        .iter()
        .map(|r| (r["direction"].as_str().unwrap().to_string(), payload(r)))
        .collect();
    data.sort();
    let want = vec![
        ("recv".to_string(), b"RAW-FROM-SERVER".to_vec()),
        ("send".to_string(), b"RAW-FROM-CLIENT".to_vec()),
    ];
    assert_eq!(data, want, "only the bytes after the upgrade are data records");

    // The server process sees the same exchanges from its side.
    let server_http = cap.of("http", server.id());
    assert_eq!(server_http.len(), expect.len());
    assert!(server_http.iter().all(|r| r["conn"]["role"] == "server"));
}

//! HTTP/2 end to end: curl against Debian's nginx with HTTP/2 enabled, over
//! TLS (ALPN h2, plaintext from the OpenSSL probes) and in cleartext with
//! prior knowledge (h2c). Both ends' `http` records must equal what was
//! sent; `--format har` of the TLS run must load in haralyzer with the same.

use nettap_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const PAGE: &str = "hello from nginx over HTTP/2\n";

/// nginx on `tls_port` (h2 and http/1.1 by ALPN) and `clear_port` (h2c).
fn nginx(tls_port: u16, clear_port: u16, cert: &Path, key: &Path) -> Nginx {
    let server = format!(
        "    listen 127.0.0.1:{tls_port} ssl http2;\n    listen 127.0.0.1:{clear_port} http2;\n    \
         ssl_certificate {};\n    ssl_certificate_key {};\n    \
         location / {{ root WWW; }}\n    \
         location /upload/ {{ root WWW; dav_methods PUT; create_full_put_path on; }}",
        cert.display(),
        key.display()
    );
    Nginx::start(clear_port, &server, &[("page.txt", PAGE.as_bytes())])
}

fn curl(args: &[&str], url: &str) -> u32 {
    let mut c =
        Command::new("curl").args(["-sS", "--fail", "-o", "/dev/null"]).args(args).arg(url).spawn().unwrap();
    assert!(wait_child(&mut c, "curl").success(), "curl {args:?} {url}");
    c.id()
}

fn one(cap: &Capture, pid: u32) -> &Value {
    let h = cap.of("http", pid);
    assert_eq!(h.len(), 1, "{h:#?}");
    h[0]
}

fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    msg["headers"].as_array()?.iter().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

#[test]
fn curl_http2_against_nginx_over_tls_and_h2c_both_ends() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let clear = free_port();
    let clear_s = clear.to_string();
    let server = nginx(*port, clear, cert, key);
    let worker = server.worker_pid();
    let sensor = Sensor::start(&["--port", port_s, "--port", &clear_s]);
    let tls_curl =
        curl(&["--http2", "--cacert", cert.to_str().unwrap()], &format!("https://localhost:{port}/page.txt"));
    // A PUT that nginx stores (it reads the whole body before answering).
    let h2c_curl = curl(
        &["--http2-prior-knowledge", "-H", "X-Test: h2c", "-X", "PUT", "--data-binary", "posted over h2c"],
        &format!("http://127.0.0.1:{clear}/upload/put.txt"),
    );
    let h1_curl = curl(
        &["--http1.1", "--cacert", cert.to_str().unwrap()],
        &format!("https://localhost:{port}/page.txt"),
    );
    drop(server);
    let cap = sensor.stop();

    // Over TLS: the client's and nginx's records of the same exchange.
    let tls_mine = one(&cap, tls_curl);
    let theirs: Vec<&Value> = cap.of("http", worker);
    let tls_theirs =
        theirs.iter().find(|t| t["protocol"] == "h2" && t["conn"]["tls"] == true).expect("nginx's h2");
    for r in [tls_mine, tls_theirs] {
        assert_eq!(r["protocol"], "h2", "{r}");
        assert_eq!(r["source"], "openssl");
        assert_eq!(r["conn"]["tls"], true);
        assert_eq!(r["request"]["method"], "GET");
        assert_eq!(r["request"]["path"], "/page.txt");
        assert_eq!(r["request"]["authority"], format!("localhost:{port}"));
        assert_eq!(header(&r["request"], ":scheme"), Some("https"));
        assert_eq!(r["response"]["status"], 200);
        assert_eq!(r["response"]["body"], PAGE);
        assert_eq!(header(&r["response"], "content-length"), Some(PAGE.len().to_string().as_str()));
    }
    assert_eq!(tls_mine["conn"]["role"], "client");
    assert_eq!(tls_theirs["conn"]["role"], "server");

    // h2c with a request body and a header of our own.
    let r = one(&cap, h2c_curl);
    assert_eq!(r["protocol"], "h2");
    assert_eq!(r["source"], "kernel");
    assert_eq!(r["conn"]["tls"], false);
    assert_eq!(r["conn"]["remote"], format!("127.0.0.1:{clear}"));
    assert_eq!(r["request"]["method"], "PUT");
    assert_eq!(r["request"]["path"], "/upload/put.txt");
    assert_eq!(r["request"]["authority"], format!("127.0.0.1:{clear}"));
    assert_eq!(header(&r["request"], "x-test"), Some("h2c"));
    assert_eq!(r["request"]["body"], "posted over h2c");
    assert_eq!(r["response"]["status"], 201);
    let served = theirs.iter().find(|t| t["protocol"] == "h2" && t["request"]["method"] == "PUT").unwrap();
    assert_eq!(served["request"]["body"], "posted over h2c");
    assert_eq!(served["response"]["status"], 201);

    // The same nginx over HTTP/1.1.
    let r = one(&cap, h1_curl);
    assert_eq!(r["protocol"], "http/1.1");
    assert_eq!(r["response"]["body"], PAGE);
    assert_eq!(theirs.len(), 3, "nginx's view of all three");
    for pid in [tls_curl, h2c_curl, h1_curl, worker] {
        assert!(cap.of("data", pid).is_empty(), "every byte became an exchange for pid {pid}");
    }
}

#[test]
fn har_of_a_curl_http2_run_loads_in_haralyzer() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let clear = free_port();
    let server = nginx(*port, clear, cert, key);
    let dir = tempfile::tempdir().unwrap();
    let (har, ready) = (dir.path().join("x.har"), dir.path().join("ready"));
    let mut sensor = Command::new(nettap_bin())
        .args(["capture", "--format", "har", "--port", port_s, "--out"])
        .arg(&har)
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready, || sensor.try_wait().unwrap().is_none());
    let pid =
        curl(&["--http2", "--cacert", cert.to_str().unwrap()], &format!("https://localhost:{port}/page.txt"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sensor.id() as i32, libc::SIGINT) };
    assert!(wait_child(&mut sensor, "nettap").success());
    drop(server);

    let out = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/har_check.py"))
        .arg(&har)
        .output()
        .unwrap();
    assert!(out.status.success(), "haralyzer refused the HAR: {}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let e = entries.iter().find(|e| e["pid"] == pid as u64).expect("curl's entry");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["url"], format!("https://localhost:{port}/page.txt"));
    assert_eq!(e["status"], 200);
    assert_eq!(e["response_text"], PAGE);
    assert_eq!(e["http_version"], "HTTP/2.0");
}

#[test]
fn grpc_calls_between_real_grpcio_peers() {
    let port = free_port();
    let port_s = port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/grpc_peer.py");
    let sensor = Sensor::start(&["--port", &port_s]);
    let mut server =
        Command::new(venv_python()).arg(&peer).args(["server", &port_s]).arg(&ready).spawn().unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    let mut client = Command::new(venv_python()).arg(&peer).args(["client", &port_s]).spawn().unwrap();
    assert!(wait_child(&mut client, "gRPC client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    for (pid, role) in [(client.id(), "client"), (server.id(), "server")] {
        let calls = cap.of("http", pid);
        assert_eq!(calls.len(), 3, "{role}: {calls:#?}");
        for (r, (method, req, resp, status)) in calls.iter().zip([
            ("Say", "ping-1", Some("pong:ping-1"), 0),
            ("Say", "ping-2", Some("pong:ping-2"), 0),
            ("Fail", "x", None, 5),
        ]) {
            assert_eq!(r["protocol"], "h2", "{role}");
            assert_eq!(r["conn"]["role"], role);
            assert_eq!(r["request"]["method"], "POST");
            assert_eq!(r["request"]["path"], format!("/nettap.test.Echo/{method}"));
            let g = &r["grpc"];
            assert_eq!(g["service"], "nettap.test.Echo", "{role}: {r}");
            assert_eq!(g["method"], method);
            assert_eq!(g["request_messages"], serde_json::json!([{"text": req}]));
            match resp {
                Some(text) => assert_eq!(g["response_messages"], serde_json::json!([{"text": text}])),
                None => assert_eq!(g["response_messages"], serde_json::json!([])),
            }
            assert_eq!(g["status"], status, "{role}: {r}");
            if status != 0 {
                assert_eq!(g["message"], "no such thing");
            }
        }
    }
}

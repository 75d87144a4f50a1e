//! HTTP/2 end to end: curl against Debian's nginx with HTTP/2 enabled, over
//! TLS (ALPN h2, plaintext from the OpenSSL probes) and in cleartext with
//! prior knowledge (h2c). Both ends' `http` records must equal what was
//! sent; `--format har` of the TLS run must load in haralyzer with the same.

use nettap_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const PAGE: &str = "hello from nginx over HTTP/2\n";
const ECHO: &str = "answered by the return directive";

/// nginx on `tls_port` (h2 and http/1.1 by ALPN) and `clear_port` (h2c):
/// a static file, a `return` with a body, and PUT into a directory.
fn nginx(tls_port: u16, clear_port: u16, cert: &Path, key: &Path) -> Nginx {
    let server = format!(
        "    listen 127.0.0.1:{tls_port} ssl http2;\n    listen 127.0.0.1:{clear_port} http2;\n    \
         ssl_certificate {};\n    ssl_certificate_key {};\n    \
         location / {{ root WWW; }}\n    \
         location = /echo {{ return 200 \"{}\"; }}\n    \
         location /upload/ {{ root WWW; dav_methods PUT; create_full_put_path on; }}",
        cert.display(),
        key.display(),
        ECHO,
    );
    Nginx::start(clear_port, &server, &[("page.txt", PAGE.as_bytes())])
}

fn curl(args: &[&str], url: &str) -> u32 {
    let mut c =
        Command::new("curl").args(["-sS", "--fail", "-o", "/dev/null"]).args(args).arg(url).spawn().unwrap();
    assert!(wait_child(&mut c, "curl").success(), "curl {args:?} {url}");
    c.id()
}

/// One curl exchange as curl itself saw it.
struct Seen {
    pid: u32,
    /// Its socket's address.
    local: String,
    /// The header fields it sent, pseudo-headers first (from `-v`).
    sent: Vec<(String, String)>,
    /// The status and header fields it received (from `-D`).
    status: u64,
    received: Vec<(String, String)>,
    /// The response body.
    body: String,
}

/// Runs curl over HTTP/2 and reads back what it sent and received.
fn curl_seen(args: &[&str], url: &str) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (log, heads, body, addr) = (file("log"), file("heads"), file("body"), file("addr"));
    let mut c = Command::new("curl")
        .args(["-sS", "--fail", "-v", "--stderr", &log, "-D", &heads, "-o", &body])
        .args(["-w", "%{local_ip}:%{local_port}"])
        .args(args)
        .arg(url)
        .stdout(std::fs::File::create(&addr).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "curl").success(), "curl {args:?} {url}");
    let log = std::fs::read_to_string(log).unwrap();
    // curl logs each field it sends: "* h2h3 [name: value]" (7.88), or
    // "* [HTTP/2] [1] [name: value]" (8.x).
    let sent: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| l.strip_prefix("* h2h3 [").or_else(|| l.strip_prefix("* [HTTP/2] [1] [")))
        .filter_map(|l| l.strip_suffix(']')?.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert!(sent.len() >= 4, "curl's log names no HTTP/2 fields:\n{log}");
    let heads = std::fs::read_to_string(heads).unwrap();
    let mut lines = heads.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let received = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.trim_end().to_string()))
        .collect();
    Seen {
        pid: c.id(),
        local: std::fs::read_to_string(addr).unwrap(),
        sent,
        status,
        received,
        body: std::fs::read_to_string(body).unwrap(),
    }
}

fn one(cap: &Capture, pid: u32) -> &Value {
    let h = cap.of("http", pid);
    assert_eq!(h.len(), 1, "{h:#?}");
    h[0]
}

fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    msg["headers"].as_array()?.iter().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

fn fields(msg: &Value) -> Vec<(String, String)> {
    msg["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().to_string(), h[1].as_str().unwrap().to_string()))
        .collect()
}

/// Both ends' records of `seen`'s exchange equal what curl sent and got.
fn assert_both_ends(cap: &Capture, seen: &Seen, worker: u32, remote: &str, tls: bool, req_body: &str) {
    let mine = one(cap, seen.pid);
    let theirs = cap
        .of("http", worker)
        .into_iter()
        .find(|r| r["conn"]["remote"] == seen.local.as_str())
        .unwrap_or_else(|| panic!("nginx's record of {}'s connection", seen.local));
    let method = &seen.sent.iter().find(|(n, _)| n == ":method").unwrap().1;
    let path = &seen.sent.iter().find(|(n, _)| n == ":path").unwrap().1;
    let authority = &seen.sent.iter().find(|(n, _)| n == ":authority").unwrap().1;
    for (r, role, local, peer) in
        [(mine, "client", seen.local.as_str(), remote), (theirs, "server", remote, seen.local.as_str())]
    {
        let who = format!("{role} record {r}");
        assert_eq!(r["protocol"], "h2", "{who}");
        assert_eq!(r["source"], if tls { "openssl" } else { "kernel" }, "{who}");
        assert_eq!(r["conn"]["tls"], tls, "{who}");
        assert_eq!(r["conn"]["role"], role, "{who}");
        assert_eq!(
            (r["conn"]["local"].as_str(), r["conn"]["remote"].as_str()),
            (Some(local), Some(peer)),
            "{who}"
        );
        assert_eq!(r["request"]["method"], method.as_str(), "{who}");
        assert_eq!(r["request"]["path"], path.as_str(), "{who}");
        assert_eq!(r["request"]["authority"], authority.as_str(), "{who}");
        assert_eq!(fields(&r["request"]), seen.sent, "{who}: request fields as curl sent them");
        // nginx answers a `return` before reading the body and resets the
        // stream with NO_ERROR ("stop sending"): the body it then reads
        // belongs to the exchange, but it may close the connection without
        // reading it at all (it never saw those bytes, nor does nettap).
        let unread = role == "server" && r["reset"] == "NO_ERROR" && r["request"]["body"] == "";
        assert!(r["request"]["body"] == req_body || unread, "{who}");
        let resp = &r["response"];
        assert_eq!(resp["status"], seen.status, "{who}");
        let mut got = fields(resp);
        assert_eq!(got.remove(0), (":status".to_string(), seen.status.to_string()), "{who}");
        assert_eq!(got, seen.received, "{who}: response fields as curl received them");
        assert_eq!(resp["body"], seen.body.as_str(), "{who}");
        assert!(r["latency_ns"].as_u64().unwrap() > 0, "{who}");
        assert!(resp.get("headers_incomplete").is_none(), "{who}");
        // Nothing but that "stop sending" resets.
        assert!(r.get("reset").is_none() || (role == "server" && r["reset"] == "NO_ERROR"), "{who}");
    }
    assert_eq!(mine["pid"], seen.pid);
    assert_eq!(theirs["pid"], worker);
}

#[test]
fn curl_http2_against_nginx_over_tls_and_h2c_both_ends() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let clear = free_port();
    let clear_s = clear.to_string();
    let server = nginx(*port, clear, cert, key);
    let worker = server.worker_pid();
    let sensor = Sensor::start(&["--port", port_s, "--port", &clear_s]);
    let ca = ["--cacert", cert.to_str().unwrap()];
    let tls_get = curl_seen(&[&["--http2"][..], &ca].concat(), &format!("https://localhost:{port}/page.txt"));
    let posted = "form=posted over TLS";
    let tls_post = curl_seen(
        &[&["--http2", "--data-binary", posted, "-H", "X-Test: tls"][..], &ca].concat(),
        &format!("https://localhost:{port}/echo"),
    );
    // A PUT that nginx stores (it reads the whole body before answering).
    let put = "posted over h2c";
    let h2c_put = curl_seen(
        &["--http2-prior-knowledge", "-H", "X-Test: h2c", "-X", "PUT", "--data-binary", put],
        &format!("http://127.0.0.1:{clear}/upload/put.txt"),
    );
    let h1_curl = curl(&[&["--http1.1"][..], &ca].concat(), &format!("https://localhost:{port}/page.txt"));
    drop(server);
    let cap = sensor.stop();

    let (tls_addr, clear_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{clear}"));
    assert_eq!(tls_get.body, PAGE);
    assert_both_ends(&cap, &tls_get, worker, &tls_addr, true, "");
    assert_eq!(tls_post.body, ECHO);
    assert_both_ends(&cap, &tls_post, worker, &tls_addr, true, posted);
    assert_eq!(h2c_put.status, 201);
    assert_both_ends(&cap, &h2c_put, worker, &clear_addr, false, put);
    assert_eq!(header(&one(&cap, h2c_put.pid)["request"], "x-test"), Some("h2c"));

    // The same nginx over HTTP/1.1.
    let r = one(&cap, h1_curl);
    assert_eq!(r["protocol"], "http/1.1");
    assert_eq!(r["response"]["body"], PAGE);
    assert_eq!(cap.of("http", worker).len(), 4, "nginx's view of all four");
    for pid in [tls_get.pid, tls_post.pid, h2c_put.pid, h1_curl, worker] {
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

    let out =
        Command::new(venv_python()).arg(nettap_e2e::program("har_check.py")).arg(&har).output().unwrap();
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
    let peer = nettap_e2e::program("grpc_peer.py");
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

/// A body's bytes, whether written as text or base64.
fn body_bytes(msg: &Value) -> Vec<u8> {
    use base64::Engine;
    match (msg["body"].as_str(), msg["body_b64"].as_str()) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
        _ => panic!("no body in {msg}"),
    }
}

/// A gRPC message as carried: uncompressed flag, 4-byte length, bytes.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend((msg.len() as u32).to_be_bytes());
    f.extend(msg);
    f
}

#[test]
fn grpc_connection_joined_midstream_decodes_what_it_can_and_never_guesses() {
    let port = free_port();
    let port_s = port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (server_ready, client_ready, go) =
        (dir.path().join("server"), dir.path().join("client"), dir.path().join("go"));
    let peer = nettap_e2e::program("grpc_peer.py");
    let mut server =
        Command::new(venv_python()).arg(&peer).args(["server", &port_s]).arg(&server_ready).spawn().unwrap();
    wait_for_file(&server_ready, || server.try_wait().unwrap().is_none());
    // One call before the capture starts: both HPACK tables fill, and the
    // connection is open when the sensor attaches.
    let mut client = Command::new(venv_python())
        .arg(&peer)
        .args(["late-client", &port_s])
        .arg(&client_ready)
        .arg(&go)
        .spawn()
        .unwrap();
    wait_for_file(&client_ready, || client.try_wait().unwrap().is_none());
    let sensor = Sensor::start(&["--port", &port_s]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_child(&mut client, "gRPC client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    let pid = client.id();
    assert!(
        cap.of("conn", pid).iter().any(|c| c["event"] == "midstream"),
        "the connection was open before the capture"
    );
    let calls = cap.of("http", pid);
    assert_eq!(calls.len(), 3, "the three calls after the join: {calls:#?}");
    let mut incomplete = 0;
    for (r, (method, req, resp)) in calls.iter().zip([
        ("Say", "ping-1", Some("pong:ping-1")),
        ("Say", "ping-2", Some("pong:ping-2")),
        ("Fail", "x", None),
    ]) {
        assert_eq!(r["protocol"], "h2", "{r}");
        assert_eq!(r["conn"]["role"], "client", "{r}");
        let (q, a) = (&r["request"], &r["response"]);
        // What was decoded is what was sent; what referred to the unknown
        // table is absent and said so.
        let want = format!("/nettap.test.Echo/{method}");
        let said_incomplete = q["headers_incomplete"] == true;
        incomplete += usize::from(said_incomplete);
        for (field, sent) in [("method", "POST"), ("path", want.as_str())] {
            let got = q[field].as_str().unwrap();
            assert!(got == sent || (got.is_empty() && said_incomplete), "{field} {got:?}: {r}");
        }
        for (name, value) in fields(q) {
            let ok = match name.as_str() {
                ":method" => value == "POST",
                ":path" => value == want,
                ":scheme" => value == "http",
                ":authority" => value == format!("127.0.0.1:{port}"),
                "content-type" => value == "application/grpc",
                "te" => value == "trailers",
                _ => true,
            };
            assert!(ok, "{name}: {value} was never sent: {r}");
        }
        assert_eq!(body_bytes(q), framed(req.as_bytes()), "{r}");
        assert_eq!(a["status"], 200, "{r}");
        match resp {
            Some(text) => assert_eq!(body_bytes(a), framed(text.as_bytes()), "{r}"),
            None => assert_eq!(body_bytes(a), b"", "{r}"),
        }
        if let Some(status) = r["grpc"]["status"].as_u64() {
            assert_eq!(status, if resp.is_some() { 0 } else { 5 }, "{r}");
        }
    }
    assert!(incomplete > 0, "grpcio's encoder refers to entries from before the join");
    assert!(cap.of("data", pid).is_empty(), "every write after the join starts with frames");
}

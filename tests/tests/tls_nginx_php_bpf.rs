//! TLS plaintext from Debian's nginx (libssl.so.3, a server) and from its
//! clients: curl, and PHP's https:// stream wrapper and curl extension.
//! Both ends of every exchange must be captured exactly, from their own
//! processes, with no ciphertext written.

use nettap_e2e::*;
use serde_json::Value;
use std::process::Command;

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

/// nginx serving `resp_N` (pattern bodies) over TLS; POST to a static file
/// is answered like GET (nginx reads and discards the request body).
fn nginx(port: u16, cert: &std::path::Path, key: &std::path::Path) -> Nginx {
    let files: Vec<(String, Vec<u8>)> =
        SIZES.iter().map(|&n| (format!("resp_{n}"), pattern_body("resp", n).into_bytes())).collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let server = format!(
        "    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
         keepalive_requests 1000;\n    location / {{ root WWW; error_page 405 =200 $uri; }}",
        cert.display(),
        key.display()
    );
    Nginx::start(port, &server, &files)
}

/// Each record is a POST of `req` pattern bytes answered with the `resp_N` file.
fn assert_posts(records: &[&Value], sizes: &[usize], role: &str, port: u16) {
    assert_eq!(records.len(), sizes.len(), "{role}: one exchange per request: {}", records.len());
    for (r, &n) in records.iter().zip(sizes) {
        assert_eq!(r["source"], "openssl", "{role}");
        assert_eq!(r["conn"]["tls"], true, "{role}");
        assert_eq!(r["conn"]["role"], role);
        let server_end = if role == "client" { &r["conn"]["remote"] } else { &r["conn"]["local"] };
        assert_eq!(server_end, &format!("127.0.0.1:{port}"));
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["path"], format!("/resp_{n}"));
        assert_eq!(r["request"]["authority"], format!("localhost:{port}"));
        assert_http_body(&r["request"], &pattern_body("req", n), role);
        assert_eq!(r["response"]["status"], 200, "{role}: /resp_{n}");
        assert_http_body(&r["response"], &pattern_body("resp", n), role);
    }
}

#[test]
fn curl_against_nginx_over_https_both_ends_exact() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = nginx(port, cert, key);
    let worker = server.worker_pid();
    let mut args = vec!["--port", port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // One curl, one keep-alive connection, a POST of each size.
    let bodies = tempfile::tempdir().unwrap();
    let mut curl = Command::new("curl");
    for (i, n) in SIZES.iter().enumerate() {
        let req = bodies.path().join(format!("req_{n}"));
        std::fs::write(&req, pattern_body("req", *n)).unwrap();
        if i > 0 {
            curl.arg("--next");
        }
        curl.args(["-sS", "--fail", "--http1.1", "-o", "/dev/null", "-H", "Content-Type: text/plain"])
            .arg("--cacert")
            .arg(cert)
            .arg("--data-binary")
            .arg(format!("@{}", req.display()))
            .arg(format!("https://localhost:{port}/resp_{n}"));
    }
    let mut curl = curl.spawn().unwrap();
    assert!(wait_child(&mut curl, "curl").success());
    drop(server);
    let cap = sensor.stop();

    assert!(
        cap.log
            .lines()
            .any(|l| l.contains("probe attached") && l.contains("libssl.so.3") && l.contains("SSL_read")),
        "{}",
        cap.log
    );
    assert_posts(&cap.of("http", curl.id()), &SIZES, "client", port);
    assert_posts(&cap.of("http", worker), &SIZES, "server", port);
    // Debian's SSL_read begins with `sub $…,%rsp`: its result is taken by a
    // uprobe on an emulated return site, not a uretprobe (probes/sites.rs).
    for r in cap.of("http", worker) {
        assert_eq!(r["probe"], "uprobe:SSL_read:return", "{}", r["probe"]);
    }
    for r in cap.of("http", curl.id()) {
        assert_eq!(r["probe"], "uprobe:SSL_write");
    }
    for pid in [curl.id(), worker] {
        assert!(cap.of("data", pid).is_empty(), "no ciphertext written as data for pid {pid}");
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn php_stream_wrapper_and_curl_extension_against_nginx() {
    let php = Command::new("php").arg("--version").output();
    assert!(
        php.is_ok_and(|o| o.status.success()),
        "php (php-cli, php-curl) is required: ci/install.sh installs it"
    );
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = nginx(port, cert, key);
    let worker = server.worker_pid();
    let sensor = Sensor::start(&["--port", port_s]);

    let script = nettap_e2e::program("php_https.php");
    let mut client = Command::new("php").arg(&script).arg(port_s).arg(cert).spawn().unwrap();
    assert!(wait_child(&mut client, "php").success());
    drop(server);
    let cap = sensor.stop();

    // Two connections (stream wrapper, then curl), one POST each.
    assert_posts(&cap.of("http", client.id()), &[1024, 100 * 1024], "client", port);
    assert_posts(&cap.of("http", worker), &[1024, 100 * 1024], "server", port);
    let conns: std::collections::BTreeSet<&str> =
        cap.of("http", client.id()).iter().map(|r| r["conn"]["local"].as_str().unwrap()).collect();
    assert_eq!(conns.len(), 2, "the stream wrapper and the curl extension each open a connection");
    for pid in [client.id(), worker] {
        assert!(cap.of("data", pid).is_empty(), "no ciphertext written as data for pid {pid}");
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
}

#[test]
fn bodies_beyond_the_per_call_cap_keep_their_exchange() {
    // 4 KiB captured per call: curl's and nginx's 16–64 KiB SSL_writes each
    // leave a hole in the bodies. The exchange is still written, its body
    // the part before the first hole and the rest counted. (A ring large
    // enough that only the per-call cap loses bytes.)
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = nginx(port, cert, key);
    let sensor =
        Sensor::start(&["--port", port_s, "--max-bytes-per-call", "4096", "--ring-buffer-bytes", "67108864"]);
    let n = 4 << 20;
    let bodies = tempfile::tempdir().unwrap();
    let req = bodies.path().join("req");
    std::fs::write(&req, pattern_body("req", n)).unwrap();
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "--http1.1", "-o", "/dev/null", "--cacert"])
        .arg(cert)
        .arg("--data-binary")
        .arg(format!("@{}", req.display()))
        .arg(format!("https://localhost:{port}/resp_{n}"))
        .spawn()
        .unwrap();
    assert!(wait_child(&mut curl, "curl").success());
    drop(server);
    let cap = sensor.stop();

    let h = cap.of("http", curl.id());
    assert_eq!(h.len(), 1, "the exchange is kept: {}", cap.log);
    let want_req = pattern_body("req", n);
    let want_resp = pattern_body("resp", n);
    for (msg, want) in [(&h[0]["request"], &want_req), (&h[0]["response"], &want_resp)] {
        let body = msg["body"].as_str().unwrap();
        let missing = msg["body_truncated"].as_u64().unwrap();
        assert!(want.starts_with(body), "the kept body is a prefix of what was sent");
        assert!(!body.is_empty() && body.len() <= 64 << 10, "kept up to the first hole: {}", body.len());
        assert!(missing > 0 && body.len() as u64 + missing == n as u64, "{} + {missing}", body.len());
    }
    assert_eq!(h[0]["response"]["status"], 200);
    assert_eq!(cap.dropped("http_stream_gap"), (0, 0), "nothing lost that is not said in the record");
}

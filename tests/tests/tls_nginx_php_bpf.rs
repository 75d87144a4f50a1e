//! TLS plaintext from Debian's nginx (libssl.so.3, a server) and from its
//! clients: curl, and PHP's https:// stream wrapper and curl extension.
//! Both ends of every exchange must be captured exactly, from their own
//! processes, with no ciphertext written.

use nettap_e2e::*;
use std::process::Command;

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

#[test]
fn curl_against_nginx_over_https_both_ends_exact() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = Nginx::tls_pattern_files(port, cert, key, &SIZES);
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
    assert_posts(&cap.of("http", curl.id()), &SIZES, "client", port, "openssl");
    assert_posts(&cap.of("http", worker), &SIZES, "server", port, "openssl");
    // Debian's SSL_read and SSL_read_ex begin with `sub $…,%rsp` (single-
    // stepped); the ssl_read_internal both call begins with `push`: it is
    // probed instead of them (probes/shared_callee.rs), the same for writes.
    for r in cap.of("http", worker) {
        assert_eq!(r["probe"], "uretprobe:ssl_read_internal", "{}", r["probe"]);
    }
    for r in cap.of("http", curl.id()) {
        assert_eq!(r["probe"], "uprobe:ssl_write_internal");
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
    let server = Nginx::tls_pattern_files(port, cert, key, &SIZES);
    let worker = server.worker_pid();
    let sensor = Sensor::start(&["--port", port_s]);

    let script = nettap_e2e::program("php_https.php");
    let mut client = Command::new("php").arg(&script).arg(port_s).arg(cert).spawn().unwrap();
    assert!(wait_child(&mut client, "php").success());
    drop(server);
    let cap = sensor.stop();

    // Two connections (stream wrapper, then curl), one POST each.
    assert_posts(&cap.of("http", client.id()), &[1024, 100 * 1024], "client", port, "openssl");
    assert_posts(&cap.of("http", worker), &[1024, 100 * 1024], "server", port, "openssl");
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
    let server = Nginx::tls_pattern_files(port, cert, key, &SIZES);
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

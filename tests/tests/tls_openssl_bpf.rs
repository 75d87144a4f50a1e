//! TLS plaintext from OpenSSL's shared libssl: Python's `ssl` (SSL_read_ex /
//! SSL_write_ex) and curl (SSL_read / SSL_write), started after the sensor.
//! The plaintext must reassemble exactly, with the kernel's connection
//! identity and `tls: true`, and no ciphertext may be written.

use nettap_e2e::*;
use std::process::Command;

#[test]
fn python_ssl_plaintext_is_exact_and_ciphertext_never_written() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(certs.path());
    let (cert, key) = (cert.to_str().unwrap().to_string(), key.to_str().unwrap().to_string());
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let sizes = [1, 1024, 100 * 1024, 4 << 20];
    let (server, client, _dir) =
        Exchange::server_with(None, "127.0.0.1", port, &sizes, &["--tls-cert", &cert, "--tls-key", &key])
            .client(None, "127.0.0.1", &["--tls", &cert])
            .finish();
    let cap = sensor.stop();
    assert!(cap.log.contains("probe attached") && cap.log.contains("SSL_write_ex"), "{}", cap.log);
    // Every data record of both peers is OpenSSL plaintext (no kernel ciphertext).
    assert_exact_from(&cap, &client, "client", 0, "openssl");
    assert_exact_from(&cap, &server, "server", 0, "openssl");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
}

#[test]
fn curl_over_https_and_200_requests_on_one_connection() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(certs.path());
    let port = free_port();
    let port_s = port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/http_peer.py");
    let mut server = Command::new(python())
        .arg(&peer)
        .args(["server", "--port", &port_s, "--ready"])
        .arg(&ready)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    let sensor = Sensor::start(&["--port", &port_s]);

    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "--http1.1", "--cacert"])
        .arg(&cert)
        .args(["-o", "/dev/null", "-H", "Accept-Encoding: gzip"])
        .arg(format!("https://localhost:{port}/gzip"))
        .spawn()
        .unwrap();
    assert!(wait_child(&mut curl, "curl").success());
    let mut many = Command::new(python())
        .arg(&peer)
        .args(["keepalive", "--port", &port_s, "--count", "200", "--tls"])
        .arg(&cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut many, "keep-alive client").success());
    let cap = sensor.stop();
    let _ = server.kill();
    let _ = server.wait();

    let h = cap.of("http", curl.id());
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["source"], "openssl");
    assert_eq!(h[0]["conn"]["tls"], true);
    assert_eq!(h[0]["request"]["method"], "GET");
    assert_eq!(h[0]["request"]["path"], "/gzip");
    assert_eq!(h[0]["request"]["authority"], format!("localhost:{port}"));
    assert_eq!(h[0]["response"]["status"], 200);
    assert_eq!(h[0]["response"]["body"], "hello gzip ".repeat(100));
    assert!(cap.of("data", curl.id()).is_empty(), "no ciphertext (or repeated plaintext) as data");

    let paths: Vec<String> = cap
        .of("http", many.id())
        .iter()
        .map(|r| r["request"]["path"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("/k{i}")).collect();
    assert_eq!(paths, want, "200 exchanges in order over one connection");
    let conns: std::collections::BTreeSet<String> =
        cap.of("http", many.id()).iter().map(|r| r["conn"]["local"].as_str().unwrap().to_string()).collect();
    assert_eq!(conns.len(), 1, "one keep-alive connection");
    assert!(cap
        .of("http", many.id())
        .iter()
        .all(|r| r["response"]["status"] == 200 && r["conn"]["tls"] == true));
}

#[test]
fn libssl_loaded_after_start_is_found_and_captured_from_the_first_request() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(certs.path());
    let port = free_port();
    let port_s = port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/http_peer.py");
    let mut server = Command::new(python())
        .arg(&peer)
        .args(["server", "--port", &port_s, "--ready"])
        .arg(&ready)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    let sensor = Sensor::start(&["--port", &port_s]);

    // A libssl file that did not exist when the sensor started (new inode):
    // only the kernel's report of its mapping can lead the sensor to it.
    let libs = tempfile::tempdir().unwrap();
    let system = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
        .iter()
        .map(std::path::Path::new)
        .find(|d| d.join("libssl.so.3").exists())
        .expect("Debian's libssl.so.3");
    for lib in ["libssl.so.3", "libcrypto.so.3"] {
        std::fs::copy(system.join(lib), libs.path().join(lib)).unwrap();
    }
    let (loaded, go) = (dir.path().join("loaded"), dir.path().join("go"));
    let mut client = Command::new(python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/tls_late.py"))
        .args([&port_s, cert.to_str().unwrap(), loaded.to_str().unwrap(), go.to_str().unwrap(), "3"])
        .env("LD_LIBRARY_PATH", libs.path())
        .spawn()
        .unwrap();
    wait_for_file(&loaded, || client.try_wait().unwrap().is_none());
    // Wait for the sensor to say it probed the new file, then let the client start.
    let log = sensor.dir.path().join("log");
    let want = format!("{}/libssl.so.3", libs.path().display());
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("mapped after start-up") && l.contains(&want))
    {
        assert!(start.elapsed() < TIMEOUT, "the sensor never probed {want}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(&go, b"").unwrap();
    assert!(wait_child(&mut client, "late TLS client").success());
    let cap = sensor.stop();
    let _ = server.kill();
    let _ = server.wait();

    let attached = cap
        .log
        .lines()
        .filter(|l| l.contains("probe attached") && l.contains(&want) && l.contains("ok=true"))
        .count();
    assert_eq!(attached, 8, "entry and return probes on all four functions:\n{}", cap.log);
    let paths: Vec<&str> =
        cap.of("http", client.id()).iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/late0", "/late1", "/late2"], "captured from the first request");
    assert!(cap.of("http", client.id()).iter().all(|r| r["source"] == "openssl" && r["conn"]["tls"] == true));
    assert!(cap.of("data", client.id()).is_empty(), "no ciphertext");
}

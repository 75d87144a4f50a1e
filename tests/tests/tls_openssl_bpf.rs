//! TLS plaintext from OpenSSL's shared libssl: Python's `ssl` (SSL_read_ex /
//! SSL_write_ex) and curl (SSL_read / SSL_write), started after the sensor.
//! The plaintext must reassemble exactly, with the kernel's connection
//! identity and `tls: true`, and no ciphertext may be written.

use nettap_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn program(name: &str) -> PathBuf {
    nettap_e2e::program(name)
}

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
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let (server, _server_dir) = https_peer_server(port, cert, key);
    let sensor = Sensor::start(&["--port", port_s]);

    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "--http1.1", "--cacert"])
        .arg(cert)
        .args(["-o", "/dev/null", "-H", "Accept-Encoding: gzip"])
        .arg(format!("https://localhost:{port}/gzip"))
        .spawn()
        .unwrap();
    assert!(wait_child(&mut curl, "curl").success());
    let mut many = Command::new(python())
        .arg(program("http_peer.py"))
        .args(["keepalive", "--port", port_s, "--count", "200", "--tls"])
        .arg(cert)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut many, "keep-alive client").success());
    let cap = sensor.stop();
    drop(server);

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
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let (server, server_dir) = https_peer_server(port, cert, key);
    let sensor = Sensor::start(&["--port", port_s]);

    // A libssl file that did not exist when the sensor started (new inode):
    // only the kernel's report of its mapping can lead the sensor to it.
    let libs = tempfile::tempdir().unwrap();
    let system = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("libssl.so.3").exists())
        .expect("Debian's libssl.so.3");
    for lib in ["libssl.so.3", "libcrypto.so.3"] {
        std::fs::copy(system.join(lib), libs.path().join(lib)).unwrap();
    }
    let (loaded, go) = (server_dir.path().join("loaded"), server_dir.path().join("go"));
    let mut client = Command::new(python())
        .arg(program("tls_late.py"))
        .args([port_s, cert.to_str().unwrap(), loaded.to_str().unwrap(), go.to_str().unwrap(), "3"])
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
    drop(server);

    let attached: Vec<&str> = cap
        .log
        .lines()
        .filter(|l| l.contains("probe attached") && l.contains(&want) && l.contains("ok=true"))
        .collect();
    // Entry and return probes on the two internal functions that all four
    // public ones go through (probes/shared_callee.rs).
    assert_eq!(attached.len(), 4, "{}", cap.log);
    for f in ["ssl_write_internal (SSL_write_ex, SSL_write)", "ssl_read_internal (SSL_read_ex, SSL_read)"] {
        assert!(attached.iter().any(|l| l.contains(f)), "{f}: {}", cap.log);
    }
    let paths: Vec<&str> =
        cap.of("http", client.id()).iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/late0", "/late1", "/late2"], "captured from the first request");
    assert!(cap.of("http", client.id()).iter().all(|r| r["source"] == "openssl" && r["conn"]["tls"] == true));
    assert!(cap.of("data", client.id()).is_empty(), "no ciphertext");
}

/// Builds tests/programs/static_tls_client.c with OpenSSL linked in statically.
fn static_client(dir: &Path) -> PathBuf {
    let out = dir.join("static_tls_client");
    let src = nettap_e2e::program("static_tls_client.c");
    let cc = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .args(["-lssl", "-lcrypto"])
        .output()
        .expect("gcc is required to build the static OpenSSL client");
    assert!(
        cc.status.success(),
        "gcc (needs libssl-dev's libssl.a): {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    out
}

fn run_static_client(bin: &Path, port: u16, path: &str, go: Option<&Path>) -> (u32, String) {
    let mut cmd = Command::new(bin);
    cmd.args([&port.to_string(), path]);
    if let Some(go) = go {
        cmd.arg(go);
    }
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "static client failed");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn assert_static_capture(cap: &Capture, pid: u32, path: &str) {
    let h = cap.of("http", pid);
    assert_eq!(h.len(), 1, "{h:?}\n{}", cap.log);
    assert_eq!(h[0]["request"]["path"], path);
    assert_eq!(h[0]["request"]["authority"], "static");
    assert_eq!(h[0]["response"]["status"], 200);
    assert_eq!(h[0]["response"]["body"], format!("{{\"path\": \"{path}\"}}"));
    assert_eq!(h[0]["source"], "openssl");
    // Debian's libssl.a: the internal function SSL_write goes through.
    assert_eq!(h[0]["probe"], "uprobe:ssl_write_internal");
    assert!(cap.of("data", pid).is_empty(), "no ciphertext");
}

#[test]
fn static_openssl_named_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(dir.path());
    let bin = static_client(dir.path());
    let port = free_port();
    let (_server, _server_dir) = https_peer_server(port, &cert, &key);
    let port_s = port.to_string();
    let sensor = Sensor::start_with_env(
        &["--port", &port_s],
        &[("NETTAP_OPENSSL_STATIC", "true"), ("NETTAP_OPENSSL_BINARY", bin.to_str().unwrap())],
    );
    sensor.wait_for_log(&["probe attached", bin.to_str().unwrap(), "SSL_read_ex", "ok=true"]);
    let (pid, body) = run_static_client(&bin, port, "/static1", None);
    assert!(body.ends_with("{\"path\": \"/static1\"}"), "{body}");
    let cap = sensor.stop();
    assert_static_capture(&cap, pid, "/static1");
}

#[test]
fn static_openssl_found_on_exec_without_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(dir.path());
    let bin = static_client(dir.path());
    let port = free_port();
    let (_server, _server_dir) = https_peer_server(port, &cert, &key);
    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s]);
    let go = dir.path().join("go");
    let go_for_thread = go.clone();
    let bin_s = bin.to_str().unwrap().to_string();
    // The client waits for `go` before its first TLS call; we give it once
    // the sensor says it probed the program (examined at exec).
    let handle = std::thread::spawn(move || {
        run_static_client(Path::new(&bin_s), port, "/static2", Some(&go_for_thread))
    });
    sensor.wait_for_log(&["probes attached to a program with OpenSSL linked in", bin.to_str().unwrap()]);
    std::fs::write(&go, b"").unwrap();
    let (pid, body) = handle.join().unwrap();
    assert!(body.ends_with("{\"path\": \"/static2\"}"), "{body}");
    let cap = sensor.stop();
    assert_static_capture(&cap, pid, "/static2");
}

#[test]
fn python_asyncio_memory_bios_are_captured() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let (server, _server_dir) = https_peer_server(port, cert, key);
    let sensor = Sensor::start(&["--port", port_s]);
    let mut client = Command::new(python())
        .arg(program("asyncio_https.py"))
        .arg(port_s)
        .arg(cert)
        .arg("20")
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "asyncio client").success());
    drop(server);
    let cap = sensor.stop();

    let h = cap.of("http", client.id());
    let paths: Vec<&str> = h.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("/aio{i}")).collect();
    assert_eq!(paths, want, "every request, in order, from the first");
    for (r, i) in h.iter().zip(0..) {
        assert_eq!(r["source"], "openssl");
        assert_eq!(r["conn"]["tls"], true);
        assert_eq!(r["conn"]["role"], "client");
        assert_eq!(r["conn"]["remote"], format!("127.0.0.1:{port}"));
        assert_eq!(r["response"]["status"], 200);
        assert_eq!(r["response"]["body"], format!("{{\"path\": \"/aio{i}\"}}"));
    }
    assert!(cap.of("data", client.id()).is_empty(), "no ciphertext");
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
}

#[test]
fn libssl_of_another_mount_namespace_is_reached_through_proc_root() {
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let (server, server_dir) = https_peer_server(port, cert, key);
    let sensor = Sensor::start(&["--port", port_s]);

    // Inside a private mount namespace, the system path of libssl is a
    // different file (a copy bind-mounted over it), as in a container image;
    // from the host, that path still names the host's libssl.
    let system = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    assert!(system.exists(), "Debian's libssl.so.3");
    let copy = server_dir.path().join("libssl.so.3");
    std::fs::copy(system, &copy).unwrap();
    let (loaded, go) = (server_dir.path().join("loaded"), server_dir.path().join("go"));
    let script = format!(
        "mount --bind {} {} && exec {} {} {port} {} {} {} 2",
        copy.display(),
        system.display(),
        python().display(),
        program("tls_late.py").display(),
        cert.display(),
        loaded.display(),
        go.display()
    );
    let mut client = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .spawn()
        .expect("unshare (util-linux) is required");
    wait_for_file(&loaded, || client.try_wait().unwrap().is_none());
    let via_root = format!("/proc/{}/root{}", client.id(), system.display());
    sensor.wait_for_log(&["mapped after start-up", &via_root]);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_child(&mut client, "client in a mount namespace").success());
    drop(server);
    let cap = sensor.stop();

    let h = cap.of("http", client.id());
    let paths: Vec<&str> = h.iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/late0", "/late1"], "{}", cap.log);
    assert!(h.iter().all(|r| r["source"] == "openssl" && r["conn"]["tls"] == true));
    assert!(cap.of("data", client.id()).is_empty(), "no ciphertext");
}

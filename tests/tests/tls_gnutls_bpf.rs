//! TLS plaintext from GnuTLS (libgnutls.so.30): Debian's wget and gnutls-cli
//! against nginx (OpenSSL at the other end: both ends' records must hold the
//! same bytes), and gnutls-cli against gnutls-serv (GnuTLS at both ends),
//! every process started after the sensor. Plaintext must be
//! exact with the kernel's connection, the right pid and role, `source:
//! "gnutls"`, and no ciphertext written.

use nettap_e2e::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

/// Fails with a clear message when a Debian program the tests drive is missing.
fn require(program: &str, package: &str) {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(found.is_ok_and(|s| s.success()), "{program} is required: ci/install.sh installs {package}");
}

/// The `probe attached` lines must name the library file and its version.
fn assert_gnutls_attached(log: &str, file: &str) {
    for function in ["gnutls_record_send2", "gnutls_record_recv", "gnutls_record_recv_seq"] {
        assert!(
            log.lines().any(|l| l.contains("probe attached")
                && l.contains(file)
                && l.contains(function)
                && l.contains("version=\"GnuTLS 3.")
                && l.contains("ok=true")),
            "no probe attached line for {function} on {file}:\n{log}"
        );
    }
}

#[test]
fn wget_against_nginx_both_ends_exact_from_the_first_request() {
    require("wget", "wget");
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = Nginx::tls_pattern_files(port, cert, key, &SIZES);
    let worker = server.worker_pid();
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // A new wget per size: each is captured from its first request.
    let bodies = tempfile::tempdir().unwrap();
    let mut clients = Vec::new();
    for n in SIZES {
        let req = bodies.path().join(format!("req_{n}"));
        std::fs::write(&req, pattern_body("req", n)).unwrap();
        let mut wget = Command::new("wget")
            .args(["-q", "--no-config", "--no-hsts", "--tries=1", "-O", "/dev/null"])
            .arg(format!("--ca-certificate={}", cert.display()))
            .arg(format!("--post-file={}", req.display()))
            .args(["--header", "Content-Type: text/plain"])
            .arg(format!("https://localhost:{port}/resp_{n}"))
            .spawn()
            .unwrap();
        assert!(wait_child(&mut wget, "wget").success());
        clients.push((wget.id(), n));
    }
    drop(server);
    let cap = sensor.stop();

    assert_gnutls_attached(&cap.log, "libgnutls.so.30");
    for &(pid, n) in &clients {
        let h = cap.of("http", pid);
        assert_posts(&h, &[n], "client", port, "gnutls");
        assert_eq!(h[0]["comm"], "wget");
        assert_eq!(h[0]["probe"], "uprobe:gnutls_record_send2");
        let local = h[0]["conn"]["local"].as_str().unwrap();
        assert_both_ends_exact(&cap, pid, local, worker, port, n, None);
    }
    assert_posts(&cap.of("http", worker), &SIZES, "server", port, "openssl");
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

/// The plaintext both ends of one HTTP exchange wrote, from byte 0 with no
/// gap, every byte: a GnuTLS client (`pid`, its end `local`) and the nginx
/// worker (OpenSSL) on `port`. What the client sent is what nginx received
/// (the request `sent` when the test knows it, else wget's own head, then
/// the `n`-byte request body), and what nginx answered is what the client
/// received (its head, then the response body). Only TLS plaintext on the
/// kernel's connection: no ciphertext.
fn assert_both_ends_exact(
    cap: &Capture,
    pid: u32,
    local: &str,
    worker: u32,
    port: u16,
    n: usize,
    sent: Option<&[u8]>,
) {
    let server = format!("127.0.0.1:{port}");
    for r in cap.of("data", pid) {
        assert_eq!(r["source"], "gnutls", "no ciphertext: {r}");
        assert_eq!(
            (r["conn"]["local"].as_str(), r["conn"]["remote"].as_str()),
            (Some(local), Some(&*server))
        );
        assert_eq!((&r["conn"]["role"], &r["conn"]["tls"]), (&"client".into(), &true.into()), "{r}");
    }
    for r in cap.of("data", worker).into_iter().filter(|r| r["conn"]["remote"] == local) {
        assert_eq!(r["source"], "openssl", "no ciphertext: {r}");
        assert_eq!(
            (&r["conn"]["role"], &r["conn"]["local"]),
            (&"server".into(), &server.as_str().into()),
            "{r}"
        );
    }
    let (request, response) = (cap.conn_stream(pid, &server, "send"), cap.conn_stream(pid, &server, "recv"));
    assert!(request == cap.conn_stream(worker, local, "recv"), "nginx received what client {pid} sent");
    assert!(response == cap.conn_stream(worker, local, "send"), "client {pid} received what nginx sent");
    let head = format!("POST /resp_{n} HTTP/1.1\r\n");
    match sent {
        Some(sent) => {
            assert!(request == sent, "client {pid} sent {} bytes, the records {}", sent.len(), request.len())
        }
        None => assert!(request.starts_with(head.as_bytes()), "{}", lossy_start(&request)),
    }
    assert!(
        request.ends_with(format!("\r\n\r\n{}", pattern_body("req", n)).as_bytes()),
        "request body of {n}"
    );
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", lossy_start(&response));
    assert!(
        response.ends_with(format!("\r\n\r\n{}", pattern_body("resp", n)).as_bytes()),
        "response body of {n}"
    );
}

fn lossy_start(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&b[..b.len().min(200)])
}

/// gnutls-cli against nginx (OpenSSL): a new client per size sends its
/// request from its input and reads the answer until nginx closes; both ends
/// exact, the client's from its first byte.
#[test]
fn gnutls_cli_against_nginx_both_ends_exact_from_the_first_request() {
    require("gnutls-cli", "gnutls-bin");
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = Nginx::tls_pattern_files(port, cert, key, &SIZES);
    let worker = server.worker_pid();
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    let mut clients = Vec::new();
    for n in SIZES {
        let mut request = format!(
            "POST /resp_{n} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: text/plain\r\n\
             Content-Length: {n}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(pattern_body("req", n).as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cli.out");
        let mut cli = Command::new("gnutls-cli")
            .arg("--x509cafile")
            .arg(cert)
            .args(["-p", &port.to_string(), "localhost", "--logfile"])
            .arg(dir.path().join("cli.log"))
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn_guarded();
        // The input stays open until nginx has answered and closed (an end
        // of input would make gnutls-cli close first).
        let mut stdin = cli.stdin.take().unwrap();
        if let Err(e) = stdin.write_all(&request) {
            // It stopped before reading its input (a failed connection or
            // handshake): say what it logged rather than only the pipe's error.
            let status = wait_child(&mut cli, "gnutls-cli");
            let log = std::fs::read_to_string(dir.path().join("cli.log")).unwrap_or_default();
            let got = std::fs::read(&out).unwrap_or_default();
            panic!(
                "gnutls-cli ({status}) did not take the {n}-byte request ({e}); it got {} bytes from nginx: \
                 {:?}; its log:\n{log}",
                got.len(),
                lossy_start(&got)
            );
        }
        let status = wait_child(&mut cli, "gnutls-cli");
        drop(stdin);
        let got = std::fs::read(&out).unwrap();
        let body = format!("\r\n\r\n{}", pattern_body("resp", n));
        let log = std::fs::read_to_string(dir.path().join("cli.log")).unwrap_or_default();
        assert!(
            got.ends_with(body.as_bytes()),
            "gnutls-cli ({status}) got {} bytes; its log:\n{log}",
            got.len()
        );
        clients.push((cli.id(), n, request));
    }
    drop(server);
    let cap = sensor.stop();

    assert_gnutls_attached(&cap.log, "libgnutls.so.30");
    for (pid, n, request) in &clients {
        let h = cap.of("http", *pid);
        assert_posts(&h, &[*n], "client", port, "gnutls");
        assert_eq!(h[0]["comm"], "gnutls-cli");
        let local = h[0]["conn"]["local"].as_str().unwrap();
        assert_both_ends_exact(&cap, *pid, local, worker, port, *n, Some(request));
    }
    assert_posts(&cap.of("http", worker), &SIZES, "server", port, "openssl");
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

/// `n` bytes of text lines (gnutls-cli sends what it reads from its input
/// line by line, and gnutls-serv's echo mode wants text).
fn echo_text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 100);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(format!("line{i:07} 0123456789abcdefghijklmnopqrstuvwxyz\n").as_bytes());
        i += 1;
    }
    out.truncate(n.max(1) - 1);
    out.push(b'\n');
    out
}

/// gnutls-serv in echo mode on `port`, ready; killed on drop.
struct EchoServer {
    child: KillOnDrop,
    port: u16,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let err = std::fs::read_to_string(&self.err).unwrap_or_default();
            let out = std::fs::read_to_string(&self.out).unwrap_or_default();
            eprintln!("gnutls-serv said:\n{err}\n{out}");
        }
    }
}

impl EchoServer {
    fn start(port: u16, cert: &Path, key: &Path) -> EchoServer {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("serv.out"), dir.path().join("serv.err"));
        // Line-buffered (stdbuf execs it, same pid): its "Accepted
        // connection" lines are read while it runs.
        // Guarded at once: a failed wait below must not leave it running.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "gnutls-serv", "--echo", "-p", &port.to_string()])
            .arg("--x509certfile")
            .arg(cert)
            .arg("--x509keyfile")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn_guarded();
        let start = Instant::now();
        while !std::fs::read_to_string(&err).unwrap_or_default().contains("listening on IPv4") {
            assert!(child.try_wait().unwrap().is_none(), "gnutls-serv exited");
            assert!(start.elapsed() < TIMEOUT, "gnutls-serv did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        EchoServer { child, port, out, err, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The client ports of the connections it accepted, in order.
    fn accepted_ports(&self) -> Vec<u16> {
        let out = std::fs::read_to_string(&self.out).unwrap();
        out.lines()
            .filter_map(|l| l.strip_prefix("* Accepted connection from IPv4 127.0.0.1 port "))
            .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    }
}

/// gnutls-cli connected to `port` with its input kept open.
struct EchoClient {
    child: KillOnDrop,
    out: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EchoClient {
    /// Starts it (with `lib_dir` first on the library path if given) and
    /// waits until `server` has finished the handshake with it (its own log
    /// is block-buffered: it says so only at exit). Returns the client and
    /// its port.
    fn connect(server: &EchoServer, cert: &Path, lib_dir: Option<&Path>) -> (EchoClient, u16) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cli.out");
        let log = dir.path().join("cli.log");
        let mut cmd = Command::new("gnutls-cli");
        cmd.arg("--x509cafile")
            .arg(cert)
            .args(["-p", &server.port.to_string(), "localhost", "--logfile"])
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null());
        if let Some(d) = lib_dir {
            cmd.env("LD_LIBRARY_PATH", d);
        }
        let before = server.accepted_ports().len();
        let mut child = cmd.spawn_guarded();
        let start = Instant::now();
        let port = loop {
            if let Some(&p) = server.accepted_ports().get(before) {
                break p;
            }
            assert!(child.try_wait().unwrap().is_none(), "gnutls-cli exited before its handshake");
            assert!(start.elapsed() < TIMEOUT, "gnutls-cli did not finish its handshake");
            std::thread::sleep(Duration::from_millis(20));
        };
        (EchoClient { child, out, log, _dir: dir }, port)
    }

    /// Sends `input`, waits for all of it to come back, closes the input
    /// (gnutls-cli then says goodbye and exits). Returns its pid and what it received.
    fn exchange(mut self, input: &[u8]) -> (u32, Vec<u8>) {
        let mut stdin = self.child.stdin.take().unwrap();
        if let Err(e) = stdin.write_all(input) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("gnutls-cli took no input ({e}); its log:\n{log}");
        }
        let start = Instant::now();
        while std::fs::metadata(&self.out).map_or(0, |m| m.len()) < input.len() as u64 {
            assert!(start.elapsed() < TIMEOUT, "the echo did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stdin);
        assert!(wait_child(&mut self.child, "gnutls-cli").success());
        (self.child.id(), std::fs::read(&self.out).unwrap())
    }
}

#[test]
fn gnutls_cli_against_gnutls_serv_both_ends_exact() {
    require("gnutls-cli", "gnutls-bin");
    let TlsSetup { cert, key, .. } = &TlsSetup::new();
    let ports = [free_port(), free_port()];
    let ports_s = ports.map(|p| p.to_string());
    let mut args = vec!["--port", ports_s[0].as_str(), "--port", ports_s[1].as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // One server and one client per size: each stream is one connection.
    let mut pairs = Vec::new();
    for (port, n) in ports.into_iter().zip([1000, 4 << 20]) {
        let server = EchoServer::start(port, cert, key);
        let input = echo_text(n);
        let (client, client_port) = EchoClient::connect(&server, cert, None);
        let (pid, got) = client.exchange(&input);
        assert!(got == input, "gnutls-serv echoed what it was sent ({} of {} bytes)", got.len(), input.len());
        let (local, remote) = (format!("127.0.0.1:{client_port}"), format!("127.0.0.1:{port}"));
        let client = PeerInfo {
            pid,
            comm: "gnutls-cli".into(),
            local: local.clone(),
            remote: remote.clone(),
            sent: input.clone(),
            recv: input.clone(),
        };
        let serv = PeerInfo {
            pid: server.pid(),
            comm: "gnutls-serv".into(),
            local: remote,
            remote: local,
            sent: input.clone(),
            recv: input,
        };
        pairs.push((client, serv, server));
    }
    let cap = sensor.stop();

    assert_gnutls_attached(&cap.log, "libgnutls.so.30");
    for (client, serv, _server) in &pairs {
        assert_exact_from(&cap, client, "client", 0, "gnutls");
        assert_exact_from(&cap, serv, "server", 0, "gnutls");
    }
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn libgnutls_loaded_after_start_is_probed_before_the_first_record() {
    require("gnutls-cli", "gnutls-bin");
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = EchoServer::start(port, cert, key);
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // A libgnutls file that did not exist when the sensor started (a new
    // inode): only the kernel's report of its mapping leads the sensor to it.
    let libs = tempfile::tempdir().unwrap();
    let system = Path::new("/usr/lib/x86_64-linux-gnu/libgnutls.so.30");
    assert!(system.exists(), "Debian's libgnutls.so.30 (ci/install.sh installs gnutls-bin)");
    std::fs::copy(system, libs.path().join("libgnutls.so.30")).unwrap();
    let (client, client_port) = EchoClient::connect(&server, cert, Some(libs.path()));
    let copy = format!("{}/libgnutls.so.30", libs.path().display());
    sensor.wait_for_log(&["mapped after start-up", &copy]);
    let input = echo_text(64 << 10);
    let (pid, got) = client.exchange(&input);
    assert!(got == input, "echoed");
    let cap = sensor.stop();

    assert_gnutls_attached(&cap.log, &copy);
    let mapped = cap.log.lines().find(|l| l.contains("mapped after start-up") && l.contains(&copy)).unwrap();
    eprintln!("attach cost of a late libgnutls: {mapped}");
    let client = PeerInfo {
        pid,
        comm: "gnutls-cli".into(),
        local: format!("127.0.0.1:{client_port}"),
        remote: format!("127.0.0.1:{port}"),
        sent: input.clone(),
        recv: input,
    };
    assert_exact_from(&cap, &client, "client", 0, "gnutls");
}

/// Builds tests/programs/static_gnutls_client.c with GnuTLS linked in
/// statically (libgnutls28-dev's libgnutls.a; its own dependencies shared,
/// as Debian ships no static libunistring or libp11-kit).
fn static_gnutls_client(dir: &Path) -> PathBuf {
    let out = dir.join("static_gnutls_client");
    let cc = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(program("static_gnutls_client.c"))
        .args(["-Wl,-Bstatic", "-lgnutls", "-Wl,-Bdynamic", "-lgmp", "-l:libunistring.so.2", "-latomic"])
        .args(["-lnettle", "-lhogweed", "-ltasn1", "-lidn2", "-lp11-kit", "-lz", "-l:libzstd.so.1"])
        .args(["-lbrotlienc", "-lbrotlidec"])
        .output()
        .expect("gcc is required to build the static GnuTLS client");
    assert!(
        cc.status.success(),
        "gcc (needs libgnutls28-dev's libgnutls.a, installed by ci/install.sh): {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let ldd = Command::new("ldd").arg(&out).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ldd.stdout).contains("libgnutls"),
        "GnuTLS must be linked in, not shared"
    );
    out
}

/// A program with GnuTLS linked in, started after the sensor: examined at
/// exec (held by the exec gate until probed), captured from its first record.
#[test]
fn static_gnutls_found_on_exec_without_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(dir.path());
    let bin = static_gnutls_client(dir.path());
    let port = free_port();
    let (_server, _server_dir) = https_peer_server(port, &cert, &key);
    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s]);
    let child = Command::new(&bin).args([&port_s, "/static-gnutls"]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "static GnuTLS client failed");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.ends_with("{\"path\": \"/static-gnutls\"}"), "{body}");
    let cap = sensor.stop();
    let bin_s = bin.to_str().unwrap();
    assert!(
        cap.log.lines().any(|l| l.contains("probes attached to a program with GnuTLS linked in")
            && l.contains(bin_s)
            && l.contains("held=true")),
        "examined while held at exec:\n{}",
        cap.log
    );
    assert_gnutls_attached(&cap.log, bin_s);
    let h = cap.of("http", pid);
    assert_eq!(h.len(), 1, "{h:?}\n{}", cap.log);
    assert_eq!(h[0]["request"]["path"], "/static-gnutls");
    assert_eq!(h[0]["request"]["authority"], "static");
    assert_eq!(h[0]["response"]["status"], 200);
    assert_eq!(h[0]["response"]["body"], "{\"path\": \"/static-gnutls\"}");
    assert_eq!(h[0]["source"], "gnutls");
    assert_eq!(h[0]["probe"], "uprobe:gnutls_record_send2");
    assert_eq!(h[0]["conn"]["role"], "client");
    assert_eq!(h[0]["conn"]["remote"], format!("127.0.0.1:{port}"));
    assert!(cap.of("data", pid).is_empty(), "no ciphertext");
}

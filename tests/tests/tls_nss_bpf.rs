//! TLS plaintext from NSS (libssl3.so): Debian's `tstclnt` (libnss3-tools)
//! against nginx (OpenSSL at the other end) and against `selfserv` (NSS at
//! both ends), every process started after the sensor, and a libssl3 mapped
//! after the sensor started. Plaintext must be exact with the kernel's
//! connection, the right pid, role and `source: "nss"`, and no ciphertext
//! written.

use nettap_e2e::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

/// Fails with a clear message when a program of libnss3-tools is missing.
fn require_nss_tools() {
    for program in ["tstclnt", "selfserv", "certutil", "pk12util"] {
        let found = Command::new(program).arg("-Y").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(found.is_ok(), "{program} is required: ci/install.sh installs libnss3-tools");
    }
}

/// The `probe attached` lines must name the library file, each SSL-layer
/// method and the NSS version.
fn assert_nss_attached(log: &str, file: &str) {
    for function in ["ssl_Read", "ssl_Write", "ssl_Recv", "ssl_Send"] {
        assert!(
            log.lines().any(|l| l.contains("probe attached")
                && l.contains(file)
                && l.contains(&format!("probe=\"{function}\""))
                && l.contains("version=\"NSS 3.")
                && l.contains("ok=true")),
            "no probe attached line for {function} on {file}:\n{log}"
        );
    }
}

/// `tstclnt` connected to `port` on 127.0.0.1, trusting any certificate and
/// without a certificate database; `request` is sent from a file (`-A`).
fn tstclnt(port: u16) -> Command {
    let mut cmd = Command::new("tstclnt");
    cmd.args(["-4", "-D", "-o", "-h", "localhost", "-p", &port.to_string()]);
    cmd
}

/// Runs tstclnt with `request` until the server closes; its pid and what it
/// received.
fn tstclnt_exchange(port: u16, request: &[u8], dir: &Path) -> (u32, Vec<u8>) {
    let (req, out) = (dir.join("request"), dir.join("response"));
    std::fs::write(&req, request).unwrap();
    let mut child = tstclnt(port)
        .arg("-A")
        .arg(&req)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start tstclnt");
    assert!(wait_child(&mut child, "tstclnt").success(), "tstclnt failed");
    (child.id(), std::fs::read(&out).unwrap())
}

/// An HTTP/1.1 POST of the `req` pattern body of `n` bytes to `/resp_N`,
/// asking the server to close after answering (tstclnt then exits).
fn post(port: u16, n: usize) -> Vec<u8> {
    let mut r = format!(
        "POST /resp_{n} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: text/plain\r\n\
         Content-Length: {n}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(pattern_body("req", n).as_bytes());
    r
}

/// The local address of the connection `pid` opened, from the kernel's
/// connection record (not from the TLS records under test).
fn client_end(cap: &Capture, pid: u32) -> String {
    let open =
        cap.of("conn", pid).into_iter().find(|r| r["event"] == "open" && r["conn"]["role"] == "client");
    open.unwrap_or_else(|| panic!("no connection opened by pid {pid}"))["conn"]["local"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every data record of `pid` is NSS plaintext in `role` (no ciphertext
/// from the kernel probes, no other source).
fn assert_all_nss(records: &[&Value], comm: &str, role: &str) {
    assert!(!records.is_empty(), "no data records of {comm}");
    for r in records {
        assert_eq!(r["source"], "nss", "{r}");
        assert_eq!(r["comm"], comm, "{r}");
        assert_eq!(r["conn"]["tls"], true, "{r}");
        assert_eq!(r["conn"]["role"], role, "{r}");
        let probe = r["probe"].as_str().unwrap();
        assert!(["uprobe:ssl_Write", "uprobe:ssl_Send", "uretprobe:ssl_Read", "uretprobe:ssl_Recv"]
            .contains(&probe));
    }
}

#[test]
fn tstclnt_against_nginx_exact_from_the_first_request() {
    require_nss_tools();
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let server = Nginx::tls_pattern_files(port, cert, key, &SIZES);
    let worker = server.worker_pid();
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // A new tstclnt per size: each is captured from its first request.
    let dir = tempfile::tempdir().unwrap();
    let mut clients = Vec::new();
    for n in SIZES {
        let request = post(port, n);
        let (pid, response) = tstclnt_exchange(port, &request, dir.path());
        let body = pattern_body("resp", n);
        assert!(response.ends_with(body.as_bytes()), "tstclnt received /resp_{n}");
        clients.push((pid, n, request, response));
    }
    drop(server);
    let cap = sensor.stop();

    assert_nss_attached(&cap.log, "/usr/lib/x86_64-linux-gnu/libssl3.so");
    for (pid, n, request, response) in clients {
        let peer = PeerInfo {
            pid,
            comm: "tstclnt".into(),
            local: client_end(&cap, pid),
            remote: format!("127.0.0.1:{port}"),
            sent: request,
            recv: response,
        };
        assert_exact_from(&cap, &peer, "client", 0, "nss");
        assert_all_nss(&cap.of("data", pid), "tstclnt", "client");
        assert_posts(&cap.of("http", pid), &[n], "client", port, "nss");
    }
    assert_posts(&cap.of("http", worker), &SIZES, "server", port, "openssl");
    assert!(
        cap.of("data", worker).iter().all(|r| r["source"] == "openssl"),
        "no ciphertext written for nginx"
    );
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

/// A certificate database for selfserv holding `cert` and `key` as "server".
fn nss_db(dir: &Path, cert: &Path, key: &Path) -> String {
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let db = format!("sql:{}", dir.display());
    run(Command::new("certutil").args(["-N", "--empty-password", "-d", &db]));
    let p12 = dir.join("server.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:", "-name", "server", "-in"])
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .arg("-out")
        .arg(&p12));
    run(Command::new("pk12util").args(["-W", "", "-d", &db, "-i"]).arg(&p12));
    db
}

/// selfserv on `port`, accepting; killed on drop.
fn selfserv(port: u16, db: &str, dir: &Path) -> KillOnDrop {
    let err = dir.join("selfserv.err");
    let mut child = Command::new("selfserv")
        .args(["-v", "-d", db, "-n", "server", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn_guarded();
    let start = Instant::now();
    while !std::fs::read_to_string(&err).unwrap_or_default().contains("About to call accept") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "selfserv exited: {}",
            std::fs::read_to_string(&err).unwrap()
        );
        assert!(start.elapsed() < TIMEOUT, "selfserv did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn tstclnt_against_selfserv_both_ends_exact() {
    require_nss_tools();
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let dir = tempfile::tempdir().unwrap();
    let db = nss_db(dir.path(), cert, key);
    // selfserv answers `GET /FILE` with that file (PR_TransmitFile, which
    // NSS turns into ssl_Send calls) and echoes a POST whose body is one
    // line, within its 10 KiB request buffer.
    let mut requests = Vec::new();
    for n in SIZES {
        let file = dir.path().join(format!("resp_{n}"));
        std::fs::write(&file, pattern_body("resp", n)).unwrap();
        requests.push(format!("GET {} HTTP/1.0\r\n\r\n", file.display()).into_bytes());
    }
    for n in [1000, 8000] {
        requests.push(format!("POST / HTTP/1.0\r\n\r\n{}\n", pattern_body("req", n)).into_bytes());
    }
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let server = selfserv(port, &db, dir.path());

    let mut exchanges = Vec::new();
    for request in requests {
        let (pid, response) = tstclnt_exchange(port, &request, dir.path());
        assert!(response.starts_with(b"HTTP/1.0 200 OK"), "selfserv answered");
        exchanges.push((pid, request, response));
    }
    let server_pid = server.0.id();
    let cap = sensor.stop();
    drop(server);

    assert_nss_attached(&cap.log, "/usr/lib/x86_64-linux-gnu/libssl3.so");
    let listen = format!("127.0.0.1:{port}");
    for (pid, request, response) in &exchanges {
        let local = client_end(&cap, *pid);
        let client = PeerInfo {
            pid: *pid,
            comm: "tstclnt".into(),
            local: local.clone(),
            remote: listen.clone(),
            sent: request.clone(),
            recv: response.clone(),
        };
        assert_exact_from(&cap, &client, "client", 0, "nss");
        // The server's side of the same connection: the same bytes, crossed.
        assert!(cap.conn_stream(server_pid, &local, "recv") == *request, "selfserv received the request");
        assert!(cap.conn_stream(server_pid, &local, "send") == *response, "selfserv sent the response");
    }
    let served = cap.of("data", server_pid);
    assert_all_nss(&served, "selfserv", "server");
    assert!(served.iter().all(|r| r["conn"]["local"] == listen.as_str()));
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn libssl3_loaded_after_start_is_probed_before_the_first_record() {
    require_nss_tools();
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let n = 64 << 10;
    let server = Nginx::tls_pattern_files(port, cert, key, &[n]);
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // A libssl3.so that did not exist when the sensor started (a new
    // inode): only the kernel's report of its mapping leads the sensor to it.
    let libs = tempfile::tempdir().unwrap();
    let system = Path::new("/usr/lib/x86_64-linux-gnu/libssl3.so");
    assert!(system.exists(), "Debian's libssl3.so (ci/install.sh installs libnss3-tools)");
    let copy = libs.path().join("libssl3.so");
    std::fs::copy(system, &copy).unwrap();
    let out = libs.path().join("response");
    // Input from a pipe: tstclnt connects, then waits for the request.
    let mut child = tstclnt(port)
        .env("LD_LIBRARY_PATH", libs.path())
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn_guarded();
    let copy_s = copy.display().to_string();
    sensor.wait_for_log(&["mapped after start-up", &copy_s]);
    let request = post(port, n);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&request).unwrap();
    // Reading a pipe, tstclnt does not exit when the server closes (nor at
    // the pipe's end): it is stopped once the whole answer is in.
    let body = pattern_body("resp", n);
    let start = Instant::now();
    while !std::fs::read(&out).unwrap().ends_with(body.as_bytes()) {
        assert!(child.try_wait().unwrap().is_none(), "tstclnt exited early");
        assert!(start.elapsed() < TIMEOUT, "tstclnt did not receive /resp_{n}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    wait_child(&mut child, "tstclnt");
    drop(stdin);
    let pid = child.id();
    let response = std::fs::read(&out).unwrap();
    drop(server);
    let cap = sensor.stop();

    assert_nss_attached(&cap.log, &copy_s);
    let mapped =
        cap.log.lines().find(|l| l.contains("mapped after start-up") && l.contains(&copy_s)).unwrap();
    eprintln!("attach cost of a late libssl3: {mapped}");
    let client = PeerInfo {
        pid,
        comm: "tstclnt".into(),
        local: client_end(&cap, pid),
        remote: format!("127.0.0.1:{port}"),
        sent: request,
        recv: response,
    };
    assert_exact_from(&cap, &client, "client", 0, "nss");
}

/// Builds tests/programs/nss_echo_server.c against Debian's NSS.
fn nss_echo_server(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("nss_echo_server");
    let cc = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(program("nss_echo_server.c"))
        .args(["-I/usr/include/nss", "-I/usr/include/nspr", "-lssl3", "-lnss3", "-lnspr4"])
        .output()
        .expect("gcc is required to build the NSS echo server");
    assert!(cc.status.success(), "gcc (needs libnss3-dev): {}", String::from_utf8_lossy(&cc.stderr));
    out
}

/// An NSS server receiving 0 B..4 MiB (selfserv keeps 10 KiB at most) and
/// echoing it: both ends NSS, every byte each way.
#[test]
fn tstclnt_against_an_nss_echo_server_up_to_4_mib_each_way() {
    require_nss_tools();
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let dir = tempfile::tempdir().unwrap();
    let db = nss_db(dir.path(), cert, key);
    let bin = nss_echo_server(dir.path());
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let mut server = Command::new(&bin)
        .args([db.as_str(), "server", &port.to_string(), &SIZES.len().to_string()])
        .stdout(Stdio::piped())
        .spawn_guarded();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut ready)
        .unwrap();
    assert_eq!(ready, "listening\n", "the NSS echo server did not start");

    let mut exchanges = Vec::new();
    for n in SIZES {
        let body = pattern_body("req", n);
        let request = format!("{n}\n{body}").into_bytes();
        let (pid, response) = tstclnt_exchange(port, &request, dir.path());
        assert!(response == body.as_bytes(), "echoed {} of {n} bytes", response.len());
        exchanges.push((pid, request, response));
    }
    assert!(wait_child(&mut server, "nss_echo_server").success());
    let server_pid = server.0.id();
    let cap = sensor.stop();

    let listen = format!("127.0.0.1:{port}");
    for (pid, request, response) in &exchanges {
        let local = client_end(&cap, *pid);
        let client = PeerInfo {
            pid: *pid,
            comm: "tstclnt".into(),
            local: local.clone(),
            remote: listen.clone(),
            sent: request.clone(),
            recv: response.clone(),
        };
        assert_exact_from(&cap, &client, "client", 0, "nss");
        assert!(cap.conn_stream(server_pid, &local, "recv") == *request, "the server received the request");
        assert!(cap.conn_stream(server_pid, &local, "send") == *response, "the server sent the echo");
    }
    let served = cap.of("data", server_pid);
    assert_all_nss(&served, "nss_echo_server", "server");
    assert!(served.iter().all(|r| r["conn"]["local"] == listen.as_str()));
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

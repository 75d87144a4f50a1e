//! TLS plaintext from OpenSSL 1.1.1: the copy the psycopg2-binary wheel
//! bundles (`libssl-3a880ada.so.1.1`, renamed by auditwheel, in the test
//! venv that ci/install.sh makes), driven through ctypes by
//! tests/programs/openssl_ctypes_peer.py at both ends: `source: "openssl"`,
//! exact each way from 0 B to 4 MiB, the right pid, connection and role, no
//! ciphertext.

use nettap_e2e::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

const SIZES: [usize; 4] = [0, 1024, 100 * 1024, 4 << 20];

/// The wheel's libcrypto and libssl (OpenSSL 1.1.1) in the test venv.
fn wheel_openssl11() -> (PathBuf, PathBuf) {
    let out = Command::new(venv_python())
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .output()
        .unwrap();
    let libs = Path::new(String::from_utf8(out.stdout).unwrap().trim()).join("psycopg2_binary.libs");
    let find = |prefix: &str| {
        std::fs::read_dir(&libs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".so.1.1"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{prefix}*.so.1.1 in {}: ci/install.sh installs psycopg2-binary into the venv",
                    libs.display()
                )
            })
    };
    (find("libcrypto-"), find("libssl-"))
}

/// One openssl_ctypes_peer.py, stopped after loading the library until `go`.
struct Peer {
    child: KillOnDrop,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(libs: &(PathBuf, PathBuf), args: &[&str]) -> Peer {
        let mut child = Command::new(python())
            .arg(program("openssl_ctypes_peer.py"))
            .arg(&libs.0)
            .arg(&libs.1)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn_guarded();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Peer { child, stdin, stdout };
        assert_eq!(peer.line(), "loaded", "the peer loaded the wheel's OpenSSL");
        peer
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn go(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

#[test]
fn wheel_openssl_1_1_both_ends_exact() {
    let libs = wheel_openssl11();
    let libssl_name = libs.1.file_name().unwrap().to_str().unwrap().to_string();
    let TlsSetup { cert, key, port, port_s, .. } = &TlsSetup::new();
    let port = *port;
    let mut args = vec!["--port", port_s.as_str(), "--raw"];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // The wheel's directory is no system directory: the library is probed
    // when a process maps it, and the server waits for that.
    let count = SIZES.len().to_string();
    let mut server = Peer::start(
        &libs,
        &["server", port_s.as_str(), cert.to_str().unwrap(), key.to_str().unwrap(), count.as_str()],
    );
    sensor.wait_for_log(&["mapped after start-up", &libssl_name]);
    server.go();
    assert_eq!(server.line(), "listening");

    // Clients map the same file, already probed.
    let mut clients = Vec::new();
    for n in SIZES {
        let mut client = Peer::start(&libs, &["client", port_s.as_str(), &n.to_string()]);
        client.go();
        let local = format!("127.0.0.1:{}", client.line());
        assert!(wait_child(&mut client.child, "the OpenSSL 1.1 client").success());
        clients.push((client.pid(), n, local));
    }
    assert!(wait_child(&mut server.child, "the OpenSSL 1.1 server").success());
    let cap = sensor.stop();

    let attached: Vec<&str> = cap
        .log
        .lines()
        .filter(|l| {
            l.contains("probe attached")
                && l.contains(&libssl_name)
                && l.contains("version=\"OpenSSL 1.1.1")
                && l.contains("ok=true")
        })
        .collect();
    // Each function probed, itself or through the internal function it calls.
    for f in ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"] {
        let n = attached.iter().filter(|l| probe_label_names(l, f)).count();
        assert!(n >= 2, "entry and return probes for {f} in {libssl_name}:\n{}", cap.log);
    }
    let comm: String = python().file_name().unwrap().to_str().unwrap().chars().take(15).collect();
    let listen = format!("127.0.0.1:{port}");
    assert_openssl_echoes(&cap, &clients, &comm, server.pid(), &listen);
    assert_eq!(cap.dropped("tls_socket_unknown"), (0, 0));
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

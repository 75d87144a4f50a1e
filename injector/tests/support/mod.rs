//! The injector binary as a test peer (killed on drop, its log kept) and the
//! HTTPS clients the tests talk to it with (curl, openssl).
#![allow(dead_code)] // each test file uses its own part

use nettap_e2e::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// `nettap-injector serve` on a free loopback port, listening; killed on drop.
pub struct Injector {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Injector {
    /// Starts it with this certificate and key (plus `extra` arguments), its
    /// stderr in `log_dir`, and waits until it listens.
    pub fn start(cert: &Path, key: &Path, extra: &[&str], log_dir: &Path) -> Injector {
        let port = free_port();
        let log = log_dir.join("injector.log");
        let child = Command::new(env!("CARGO_BIN_EXE_nettap-injector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--agent-image", "example/agent:1"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(extra)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut injector = Injector { child, port, log };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(injector.child.try_wait().unwrap().is_none(), "the injector exited: {}", injector.log());
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the injector never listened: {}",
                injector.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        injector
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its exit status, waited for at most `timeout`.
    pub fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "the injector did not exit within {timeout:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A curl request trusting only `ca`: `-w` appends the status on its own line.
pub fn curl_command(ca: &Path, url: &str, body: Option<&Path>) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "--cacert"]).arg(ca).args(["-w", "\n%{http_code}"]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary"]).arg(format!("@{}", b.display()));
    }
    c.arg(url);
    c
}

/// (status, body) of a finished `curl_command`, which must have succeeded.
pub fn curl_result(out: Output) -> (u16, String) {
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// (status, body) of a curl request to the injector, trusting only `ca`.
pub fn curl(ca: &Path, url: &str, body: Option<&Path>) -> (u16, String) {
    curl_result(curl_command(ca, url, body).output().expect("curl runs"))
}

/// The base64 of a PEM certificate, whitespace removed: equal for equal DER.
pub fn pem_base64(pem: &str) -> String {
    let begin = pem.find("-----BEGIN CERTIFICATE-----").expect("a PEM certificate") + 27;
    let end = begin + pem[begin..].find("-----END CERTIFICATE-----").expect("its end");
    pem[begin..end].split_whitespace().collect()
}

/// The certificate the server on `port` presents to a new handshake (as
/// `pem_base64`), read by `openssl s_client`, which verifies nothing.
pub fn served_certificate(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-----BEGIN CERTIFICATE-----"), "no certificate served: {text}");
    pem_base64(&text)
}

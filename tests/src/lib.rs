//! Harness for nettap's end-to-end tests: starts the real `nettap` binary,
//! real peer programs (in network namespaces the test creates), and reads
//! the records back. Needs root, BPF and the machine's python3: a missing
//! prerequisite is a failure with a message, never a skip.

pub mod helm;
pub mod jvm;
pub mod k8s;
pub mod node;

use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bound on how long any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The `nettap` binary under test: `$NETTAP_BIN`, else the workspace's debug build.
pub fn nettap_bin() -> PathBuf {
    let path = std::env::var_os("NETTAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nettap"));
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p nettap-sensor`) or set NETTAP_BIN",
        path.display()
    );
    if std::env::var_os("NETTAP_BIN").is_none() {
        assert_fresh(&path);
    }
    path
}

/// `cargo test -p nettap-e2e` does not rebuild the binary it runs: refuse a
/// binary older than the sources it is built from, instead of testing old code.
fn assert_fresh(bin: &Path) {
    fn newest(dir: &Path, acc: &mut std::time::SystemTime) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                newest(&p, acc);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                *acc = (*acc).max(m);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut src = std::time::UNIX_EPOCH;
    for dir in ["sensor/src", "sensor-ebpf/bpf", "sensor-ebpf/include"] {
        newest(&root.join(dir), &mut src);
    }
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).unwrap();
    assert!(
        built >= src,
        "{} is older than its sources: run `cargo build -p nettap-sensor` first",
        bin.display()
    );
}

/// The peer program (`tests/programs/exchange.py`).
pub fn exchange_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/exchange.py")
}

/// The real python interpreter (pyenv shims are shell scripts: resolve past them,
/// so pid and comm are the interpreter's own).
pub fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
        .output()
        .expect("python3 is required for the end-to-end tests");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A fresh port for a test (distinct per process and per call).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Below the ephemeral range (32768+), where role inference expects servers.
    let base = 20000 + (std::process::id() % 1000) * 10;
    (base + NEXT.fetch_add(1, Ordering::Relaxed) % 10) as u16
}

/// Waits until `path` exists; panics after TIMEOUT or if `alive` says the waiter died.
pub fn wait_for_file(path: &Path, mut alive: impl FnMut() -> bool) {
    let start = Instant::now();
    while !path.exists() {
        assert!(alive(), "process died before {} appeared", path.display());
        assert!(start.elapsed() < TIMEOUT, "{} did not appear in {TIMEOUT:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a bound; kills it on timeout.
pub fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `nettap capture` writing JSON Lines.
pub struct Sensor {
    child: Option<Child>,
    /// Scratch directory of this sensor (records, logs).
    pub dir: tempfile::TempDir,
}

/// What a stopped sensor left.
pub struct Capture {
    /// Every record, in output order.
    pub records: Vec<Value>,
    /// Everything it logged.
    pub log: String,
}

impl Sensor {
    /// Starts `nettap capture --out … --ready-file … ARGS` and waits until it is ready.
    pub fn start(args: &[&str]) -> Sensor {
        Sensor::start_with_env(args, &[])
    }

    /// `start` with extra environment variables for the sensor.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Sensor {
        Sensor::spawn(Command::new(nettap_bin()), args, env)
    }

    /// `start` in network namespace `ns` (its probes still see every
    /// namespace; what it binds, such as the API, is in `ns`).
    pub fn start_in_netns(ns: &str, args: &[&str]) -> Sensor {
        // `ip netns exec` execs nettap in place: the child's pid is nettap's.
        Sensor::spawn(in_ns(Some(ns), &nettap_bin()), args, &[])
    }

    /// `start` with the capability bounding set changed by `setpriv` (for
    /// instance `-all,+bpf,+perfmon`): nettap, run as root, gets exactly what
    /// the bounding set leaves.
    pub fn start_with_caps(bounding: &str, args: &[&str]) -> Sensor {
        Sensor::spawn(Sensor::with_caps(bounding), args, &[])
    }

    /// The command `start_with_caps` runs (`setpriv` execs nettap in place,
    /// so the child's pid is nettap's).
    pub fn with_caps(bounding: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--bounding-set={bounding}")).arg("--inh-caps=-all").arg("--").arg(nettap_bin());
        c
    }

    fn spawn(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Sensor {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("records.jsonl");
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = command
            .arg("capture")
            .arg("--out")
            .arg(&out)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start nettap");
        let mut s = Sensor { child: Some(child), dir };
        let log_path = s.dir.path().join("log");
        let child = s.child.as_mut().unwrap();
        wait_for_file(&ready, || match child.try_wait().unwrap() {
            None => true,
            Some(st) => panic!(
                "nettap exited ({st}) before it was ready:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        });
        s
    }

    /// Waits until the sensor's log has a line containing every one of `words`.
    pub fn wait_for_log(&self, words: &[&str]) {
        let log = self.dir.path().join("log");
        let start = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
        {
            assert!(start.elapsed() < TIMEOUT, "the sensor never logged {words:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many lines of the sensor's log contain every one of `words`.
    pub fn log_count(&self, words: &[&str]) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        log.lines().filter(|l| words.iter().all(|w| l.contains(w))).count()
    }

    /// Waits until the log has more than `n` lines with every one of `words`.
    pub fn wait_for_log_count(&self, words: &[&str], n: usize) {
        let start = Instant::now();
        while self.log_count(words) <= n {
            assert!(start.elapsed() < TIMEOUT, "the sensor never logged {words:?} a {}th time", n + 1);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The sensor's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// True while the sensor process runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGINT, wait for a clean exit (status 0), and read what it wrote.
    pub fn stop(mut self) -> Capture {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_child(&mut child, "nettap after SIGINT");
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        assert!(status.success(), "nettap exited with {status}; log:\n{log}");
        let text = std::fs::read_to_string(self.dir.path().join("records.jsonl")).unwrap();
        let records = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        Capture { records, log }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The bytes of a data record.
pub fn payload(r: &Value) -> Vec<u8> {
    if let Some(t) = r["payload"].as_str() {
        return t.as_bytes().to_vec();
    }
    let b64 = r["payload_b64"].as_str().unwrap_or_else(|| panic!("data record without payload: {r}"));
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// One direction of one process's connection, reassembled from `data` records.
#[derive(Debug)]
pub struct Stream {
    /// seq of the first byte.
    pub start: u64,
    /// The bytes, in seq order.
    pub bytes: Vec<u8>,
    /// Missing byte ranges (from drops or truncation), as (seq, len).
    pub gaps: Vec<(u64, u64)>,
}

impl Capture {
    /// Records of `kind` from process `pid`.
    pub fn of(&self, kind: &str, pid: u32) -> Vec<&Value> {
        self.records.iter().filter(|r| r["kind"] == kind && r["pid"] == pid).collect()
    }

    /// Reassembles `direction` ("send"/"recv") of `pid`'s data records by seq,
    /// checking that chunks never overlap.
    pub fn stream(&self, pid: u32, direction: &str) -> Stream {
        let mut chunks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut truncated: Vec<(u64, u64)> = Vec::new();
        for r in self.of("data", pid).into_iter().filter(|r| r["direction"] == direction) {
            let seq = r["seq"].as_u64().unwrap();
            let bytes = payload(r);
            if let Some(t) = r["truncated"].as_u64() {
                truncated.push((seq + bytes.len() as u64, t));
            }
            if !bytes.is_empty() {
                assert!(chunks.insert(seq, bytes).is_none(), "two chunks at seq {seq}");
            }
        }
        let start = chunks.keys().next().copied().unwrap_or(0);
        let mut bytes = Vec::new();
        let mut gaps = Vec::new();
        let mut next = start;
        for (seq, chunk) in chunks {
            assert!(seq >= next, "chunk at {seq} overlaps bytes up to {next}");
            if seq > next {
                gaps.push((next, seq - next));
            }
            next = seq + chunk.len() as u64;
            bytes.extend_from_slice(&chunk);
        }
        Stream { start, bytes, gaps }
    }

    /// Sum of `drop` records' (count, bytes) for `reason`.
    pub fn dropped(&self, reason: &str) -> (u64, u64) {
        self.records
            .iter()
            .filter(|r| r["kind"] == "drop" && r["reason"] == reason)
            .fold((0, 0), |(c, b), r| (c + r["count"].as_u64().unwrap(), b + r["bytes"].as_u64().unwrap()))
    }
}

/// What an exchange.py side reported about itself.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its pid.
    pub pid: u32,
    /// Its comm.
    pub comm: String,
    /// Its socket's local endpoint as records print it.
    pub local: String,
    /// Its socket's remote endpoint.
    pub remote: String,
    /// What it sent.
    pub sent: Vec<u8>,
    /// What it received.
    pub recv: Vec<u8>,
}

/// Reads `DIR/{who}.info`, `.sent`, `.recv` left by exchange.py.
pub fn peer_info(dir: &Path, who: &str) -> PeerInfo {
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{who}.info"))).unwrap()).unwrap();
    PeerInfo {
        pid: info["pid"].as_u64().unwrap() as u32,
        comm: info["comm"].as_str().unwrap().to_string(),
        local: info["local"].as_str().unwrap().to_string(),
        remote: info["remote"].as_str().unwrap().to_string(),
        sent: std::fs::read(dir.join(format!("{who}.sent"))).unwrap(),
        recv: std::fs::read(dir.join(format!("{who}.recv"))).unwrap(),
    }
}

/// A command, optionally run inside network namespace `ns`.
pub fn in_ns(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the `ip` command (iproute2) is required");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two network namespaces joined by a veth pair, with IPv4 and IPv6
/// addresses; removed on drop.
pub struct NetNsPair {
    /// First namespace.
    pub a: String,
    /// Second namespace.
    pub b: String,
    /// IPv4 address in `a`.
    pub a4: String,
    /// IPv4 address in `b`.
    pub b4: String,
    /// IPv6 address in `a`.
    pub a6: String,
    /// IPv6 address in `b`.
    pub b6: String,
}

impl NetNsPair {
    /// Creates the pair; `n` (0..=255) keeps concurrent tests' subnets apart.
    pub fn new(n: u8) -> NetNsPair {
        let tag = format!("nt{}x{n}", std::process::id());
        let pair = NetNsPair {
            a: format!("{tag}a"),
            b: format!("{tag}b"),
            a4: format!("10.213.{n}.1"),
            b4: format!("10.213.{n}.2"),
            a6: format!("fd00:213:{n}::1"),
            b6: format!("fd00:213:{n}::2"),
        };
        let (va, vb) = (format!("v{tag}a"), format!("v{tag}b"));
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &pair.a]);
        ip(&["link", "set", &vb, "netns", &pair.b]);
        for (ns, dev, v4, v6) in [(&pair.a, &va, &pair.a4, &pair.a6), (&pair.b, &vb, &pair.b4, &pair.b6)] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Drop for NetNsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Payload sizes each side sends, in order, over one connection.
pub const SIZES: &[usize] = &[1, 100, 4095, 65537, 1 << 20];

/// Sensor settings for tests that need every byte: a ring large enough for
/// bursts on a loaded 2-core machine and no per-call cap below the largest write.
pub const EXACT: &[&str] = &["--ring-buffer-bytes", "67108864", "--max-bytes-per-call", "16777216"];

/// One exchange.py server and client.
pub struct Exchange {
    /// Scratch directory with their dumps.
    pub dir: tempfile::TempDir,
    /// The server process.
    pub server: Child,
    /// The client process, once started.
    pub client: Option<Child>,
    port: u16,
    sizes: String,
}

/// Comma-separated sizes for exchange.py.
pub fn sizes_arg(sizes: &[usize]) -> String {
    sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

impl Exchange {
    /// Starts a server listening on `listen` (in `server_ns`) and waits until it listens.
    pub fn server(server_ns: Option<&str>, listen: &str, port: u16, sizes: &[usize]) -> Exchange {
        Exchange::server_with(server_ns, listen, port, sizes, &[])
    }

    /// `server` with extra exchange.py arguments (`--io`, `--sendfile`).
    pub fn server_with(
        server_ns: Option<&str>,
        listen: &str,
        port: u16,
        sizes: &[usize],
        extra: &[&str],
    ) -> Exchange {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("server.ready");
        let sizes = sizes_arg(sizes);
        let mut server = in_ns(server_ns, &python())
            .arg(exchange_py())
            .args(["server", "--listen", listen, "--port", &port.to_string(), "--sizes", &sizes])
            .arg("--dump")
            .arg(dir.path())
            .arg("--ready")
            .arg(&ready)
            .args(extra)
            .spawn()
            .expect("cannot start the exchange server");
        wait_for_file(&ready, || server.try_wait().unwrap().is_none());
        Exchange { dir, server, client: None, port, sizes }
    }

    /// Starts the client (in `client_ns`) connecting to `connect`; with
    /// `--hold-at N --hold-file F` in `extra` it pauses before message N.
    pub fn client(mut self, client_ns: Option<&str>, connect: &str, extra: &[&str]) -> Exchange {
        let mode = if extra.contains(&"--hold-at") { "hold" } else { "client" };
        let client = in_ns(client_ns, &python())
            .arg(exchange_py())
            .args([mode, "--connect", connect, "--port", &self.port.to_string(), "--sizes", &self.sizes])
            .arg("--dump")
            .arg(self.dir.path())
            .args(extra)
            .spawn()
            .expect("cannot start the exchange client");
        self.client = Some(client);
        self
    }

    /// Server then client.
    pub fn start(
        server_ns: Option<&str>,
        listen: &str,
        client_ns: Option<&str>,
        connect: &str,
        port: u16,
        sizes: &[usize],
        client_extra: &[&str],
    ) -> Exchange {
        Exchange::server(server_ns, listen, port, sizes).client(client_ns, connect, client_extra)
    }

    /// The server's pid.
    pub fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// Waits for both to succeed and returns what each reported (server, client).
    pub fn finish(mut self) -> (PeerInfo, PeerInfo, tempfile::TempDir) {
        let client = self.client.as_mut().expect("client was never started");
        assert!(wait_child(client, "exchange client").success(), "client failed");
        assert!(wait_child(&mut self.server, "exchange server").success(), "server failed");
        let server = peer_info(self.dir.path(), "server");
        let client = peer_info(self.dir.path(), "client");
        (server, client, self.dir)
    }
}

/// Checks that `peer`'s records say exactly what it sent and received,
/// starting at byte `from` of each direction, with the right process,
/// endpoints and role, all from the kernel's plaintext TCP probes.
pub fn assert_exact(cap: &Capture, peer: &PeerInfo, role: &str, from: usize) {
    assert_exact_from(cap, peer, role, from, "kernel");
}

/// `assert_exact` for records of `source` (`kernel`, or a TLS source whose
/// records must say `tls: true` and be the only data records of the peer:
/// no ciphertext).
pub fn assert_exact_from(cap: &Capture, peer: &PeerInfo, role: &str, from: usize, source: &str) {
    let data = cap.of("data", peer.pid);
    assert!(!data.is_empty(), "no data records for pid {}", peer.pid);
    let tls = source != "kernel";
    for r in &data {
        assert_eq!(r["comm"], peer.comm.as_str(), "{r}");
        assert_eq!(r["source"], source, "{r}");
        assert_eq!(r["conn"]["local"], peer.local.as_str(), "{r}");
        assert_eq!(r["conn"]["remote"], peer.remote.as_str(), "{r}");
        assert_eq!(r["conn"]["role"], role, "{r}");
        assert_eq!(r["conn"]["tls"], tls, "{r}");
        let probe = r["probe"].as_str().unwrap();
        let ok = match source {
            "kernel" => probe.starts_with("tracepoint:syscalls:sys_exit_") || probe.starts_with("kprobe:"),
            _ => ["uprobe:SSL_write", "uretprobe:SSL_read", "uprobe:SSL_read"]
                .iter()
                .any(|p| probe.starts_with(p)),
        };
        assert!(ok, "{r}");
    }
    for (dir, want) in [("send", &peer.sent), ("recv", &peer.recv)] {
        let s = cap.stream(peer.pid, dir);
        assert!(s.gaps.is_empty(), "{dir} of pid {} has gaps {:?}", peer.pid, s.gaps);
        assert_eq!(s.start, from as u64, "{dir} of pid {} starts at {}", peer.pid, s.start);
        assert_eq!(s.bytes.len(), want.len() - from, "{dir} length of pid {}", peer.pid);
        assert!(s.bytes == want[from..], "{dir} bytes of pid {} differ", peer.pid);
    }
}

/// A self-signed certificate and key for `localhost`, 127.0.0.1 and ::1 in
/// `dir` (made by the `openssl` command; Go wants the names as SANs):
/// (certificate, key).
pub fn tls_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command is required to make test certificates");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// `programs/http_peer.py server` on `port` (plain HTTP/1.1 on loopback),
/// started and ready; its scratch directory lives as long as it is held.
pub fn http_peer_server(port: u16) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut server = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/http_peer.py"))
        .args(["server", "--port", &port.to_string(), "--ready"])
        .arg(&ready)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    (server, dir)
}

/// A CA and the server and client certificates it signed (PEM files), for
/// tests of TLS with client authentication.
pub struct Pki {
    /// The CA certificate both sides trust.
    pub ca: PathBuf,
    /// Server certificate for localhost, 127.0.0.1, ::1 and `server_ips`.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// Client certificate (clientAuth).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Makes the CA and both certificates in `dir` with the openssl command.
    pub fn new(dir: &Path, server_ips: &[&str]) -> Pki {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command is required to make test certificates");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=nettap test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        let mut san = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1".to_string();
        for ip in server_ips {
            san.push_str(&format!(",IP:{ip}"));
        }
        for (name, cn, ext) in [
            ("server", "localhost", format!("{san}\nextendedKeyUsage=serverAuth")),
            ("client", "nettap test client", "extendedKeyUsage=clientAuth".to_string()),
        ] {
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(dir.join(&extfile), ext).unwrap();
            openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ]);
        }
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// Debian's nginx (libssl.so.3), run by the test in the foreground with its
/// own configuration and files in a scratch directory, on loopback.
pub struct Nginx {
    child: Child,
    /// Its prefix: configuration, logs, and the files it serves under `www/`.
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `server_block` (the inside of one `server {}`, where
    /// `WWW` stands for the served directory) and waits until `port` accepts
    /// connections. `files` are written under `www/` first.
    pub fn start(port: u16, server_block: &str, files: &[(&str, &[u8])]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists());
        let nginx = nginx.expect("nginx is required (ci/install.sh installs Debian's nginx)");
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        for (name, bytes) in files {
            let path = www.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        std::fs::create_dir_all(&www).unwrap();
        let p = dir.path().display();
        let conf = format!(
            "user root;\nworker_processes 1;\nerror_log {p}/error.log info;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  \
             fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  \
             client_max_body_size 64m;\n  default_type application/octet-stream;\n  \
             server {{\n{}\n  }}\n}}\n",
            server_block.replace("WWW", &www.display().to_string())
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off; master_process on;"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start nginx");
        let mut n = Nginx { child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = n.child.try_wait().unwrap() {
                panic!(
                    "nginx exited ({st}):\n{}",
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < TIMEOUT, "nginx did not listen on {port} within {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    /// The pid of its (one) worker process, which serves the connections.
    pub fn worker_pid(&self) -> u32 {
        let start = Instant::now();
        loop {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            assert!(start.elapsed() < TIMEOUT, "nginx started no worker");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling our own child: SIGQUIT is nginx's graceful stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test bodies the peers make (node_https.js, php_https.php, files
/// served by nginx): `tag` + "0123456789" repeated to `n` bytes.
pub fn pattern_body(tag: &str, n: usize) -> String {
    let unit = format!("{tag}0123456789");
    unit.bytes().cycle().take(n).map(char::from).collect()
}

/// An `http` record's request or response body is `want`: kept up to 1 MiB
/// per message (the default limit), the rest counted in `body_truncated`.
pub fn assert_http_body(message: &Value, want: &str, who: &str) {
    const KEPT: usize = 1 << 20;
    let got = message["body"].as_str().unwrap_or_else(|| panic!("{who}: no text body in {message}"));
    let kept = want.len().min(KEPT);
    assert!(got == &want[..kept], "{who}: body of {} bytes differs from the {kept} bytes sent", got.len());
    assert_eq!(message["body_truncated"].as_u64().unwrap_or(0), (want.len() - kept) as u64, "{who}");
}

/// What a TLS test starts with: a fresh certificate for `localhost` and a
/// port for its server.
pub struct TlsSetup {
    /// The certificate (PEM), also the CA file clients trust.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The server's port.
    pub port: u16,
    /// The same, as a command-line argument.
    pub port_s: String,
    _dir: tempfile::TempDir,
}

impl TlsSetup {
    /// Makes the certificate and picks the port.
    pub fn new() -> TlsSetup {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = tls_cert(dir.path());
        let port = free_port();
        TlsSetup { cert, key, port, port_s: port.to_string(), _dir: dir }
    }
}

impl Default for TlsSetup {
    fn default() -> Self {
        Self::new()
    }
}

/// The Python of the test venv (`$NETTAP_VENV`, made by ci/install.sh) that
/// has the PyPI packages the tests use (haralyzer, grpcio).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("NETTAP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/nettap/venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: ci/install.sh creates it (PyPI packages of the tests)",
        py.display()
    );
    py
}

/// Builds tests/programs/go/tlspeer with the machine's Go into `out`, with
/// extra `go build` flags and environment (`GOTOOLCHAIN=go1.19.13` fetches
/// that release as a Go toolchain module once, then it is cached).
pub fn go_build(out: &Path, flags: &[&str], env: &[(&str, &str)]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/go/tlspeer");
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-buildvcs=false")
        .envs(env.iter().copied())
        .status()
        .expect("the Go toolchain (`go`) is required to build the Go test programs");
    assert!(status.success(), "go build {flags:?} {env:?} failed");
}

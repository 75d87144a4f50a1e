//! The sensor under test: the real `nettap` binary started with a records
//! file and a ready file, stopped by SIGINT (killed on drop), and what it wrote.

use crate::netns::in_ns;
use crate::wait::{wait_child, wait_for_file, TIMEOUT};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The arm64 `nettap` of the arm64 guest tests: `$NETTAP_BIN_ARM64`, else the
/// workspace's debug cross-build (`cargo build -p nettap-sensor --target
/// aarch64-unknown-linux-gnu`, which ci/test.sh runs).
pub fn nettap_bin_arm64() -> PathBuf {
    if let Some(path) = std::env::var_os("NETTAP_BIN_ARM64") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/aarch64-unknown-linux-gnu/debug/nettap");
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p nettap-sensor --target aarch64-unknown-linux-gnu`)",
        path.display()
    );
    assert_fresh(&path);
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
    for dir in ["core/src", "sensor/src", "sensor-ebpf/bpf", "sensor-ebpf/include"] {
        newest(&root.join(dir), &mut src);
    }
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).unwrap();
    assert!(
        built >= src,
        "{} is older than its sources: run `cargo build -p nettap-sensor` first",
        bin.display()
    );
}

/// Sensor settings for tests that need every byte: a ring large enough for
/// bursts on a loaded 2-core machine and no per-call cap below the largest write.
pub const EXACT: &[&str] = &["--ring-buffer-bytes", "67108864", "--max-bytes-per-call", "16777216"];

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
    /// The records file as written (for byte-for-byte comparisons).
    pub text: String,
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
            // The comparison with the sockets that exist runs often in every
            // test (10 s in use), so a close it wrongly wrote would break the
            // tests' exact checks of each connection's records.
            .env("NETTAP_RECONCILE_SECS", "2")
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

    /// Waits until a record written so far satisfies `want` (the sensor
    /// writes its records out at least once a second).
    pub fn wait_for_record(&self, what: &str, want: impl Fn(&Value) -> bool) {
        let path = self.dir.path().join("records.jsonl");
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|r| want(&r)) {
                return;
            }
            assert!(start.elapsed() < TIMEOUT, "no record of {what} in {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
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
        // On every kernel a test runs on (the guests of kernel_matrix_vm
        // too): both set_state programs of one change share its stack frame,
        // else closes the kernel skipped would go uncounted.
        assert!(
            !log.contains("the second close program ran changes the first had taken"),
            "the close make-ups exceed the skips on this kernel; log:\n{log}"
        );
        let text = std::fs::read_to_string(self.dir.path().join("records.jsonl")).unwrap();
        let cap = Capture::parse(&text, log);
        if let Ok(hook) = std::env::var("NETTAP_EXPECT_HOOK") {
            assert_kernel_hook(&cap, &hook);
        }
        cap
    }
}

/// With `NETTAP_EXPECT_HOOK` set (`kprobe` or `tracepoint`; the guest tests
/// of tests/tests/kernel_matrix_vm.rs set it), every sensor of a test must
/// have chosen that kernel hook and every plaintext TCP record must come
/// from it, so a test passing on the wrong path is a failure.
pub fn assert_kernel_hook(cap: &Capture, hook: &str) {
    let line = cap
        .log
        .lines()
        .find(|l| l.contains("kernel hook selected"))
        .unwrap_or_else(|| panic!("the sensor did not log its kernel hook:\n{}", cap.log));
    assert!(
        line.contains(&format!("hook=\"{hook}\"")) || line.contains(&format!("\"hook\":\"{hook}\"")),
        "expected the {hook} path: {line}"
    );
    let prefix = if hook == "kprobe" { "kprobe:" } else { "tracepoint:" };
    let port = |a: &Value| a.as_str().and_then(|a| a.rsplit(':').next()).unwrap_or("").to_string();
    for r in cap.records.iter().filter(|r| r["kind"] == "data" && r["source"] == "kernel") {
        // DNS over UDP, and sendfile/splice (their bytes never pass through
        // user memory), come from the syscall tracepoints on both paths.
        let dns = port(&r["conn"]["local"]) == "53" || port(&r["conn"]["remote"]) == "53";
        let probe = r["probe"].as_str().unwrap_or("");
        let pages = ["tracepoint:syscalls:sys_exit_sendfile64", "tracepoint:syscalls:sys_exit_splice"]
            .contains(&probe);
        assert!(dns || pages || probe.starts_with(prefix), "a kernel record not from the {hook} path: {r}");
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
    /// The records of a JSON Lines file's `text`, and the sensor's `log`.
    pub fn parse(text: &str, log: String) -> Capture {
        let records = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        Capture { records, log, text: text.to_string() }
    }

    /// Records of `kind` from process `pid`.
    pub fn of(&self, kind: &str, pid: u32) -> Vec<&Value> {
        self.records.iter().filter(|r| r["kind"] == kind && r["pid"] == pid).collect()
    }

    /// What the sensor wrote and logged about process `pid`, for a failure
    /// message: each record's kind, source, direction and path or length,
    /// in order, then its log lines. Payloads stay out of it.
    pub fn about(&self, pid: u32) -> String {
        let mut out = format!("records of pid {pid}:\n");
        for r in self.records.iter().filter(|r| r["pid"] == pid) {
            let what = match r["kind"].as_str() {
                Some("http") => format!("{} {}", r["protocol"], r["request"]["path"]),
                Some("data") => format!("{} seq={} len={}", r["direction"], r["seq"], payload(r).len()),
                _ => String::new(),
            };
            out += &format!("  {} {} {what}\n", r["kind"], r["source"]);
        }
        out += "log lines naming it:\n";
        let named = format!("pid={pid}");
        for l in self.log.lines().filter(|l| l.contains(&named)) {
            out += &format!("  {l}\n");
        }
        out
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

    /// One direction of the connection of `pid` whose remote end is
    /// `remote` (a server's connections apart), reassembled from its data
    /// records: from byte 0, with no gap, overlap or truncation.
    pub fn conn_stream(&self, pid: u32, remote: &str, direction: &str) -> Vec<u8> {
        let mut chunks = BTreeMap::new();
        for r in self.of("data", pid) {
            if r["conn"]["remote"] == remote && r["direction"] == direction {
                assert!(r["truncated"].as_u64().unwrap_or(0) == 0, "{r}");
                assert!(
                    chunks.insert(r["seq"].as_u64().unwrap(), payload(r)).is_none(),
                    "two chunks at one seq"
                );
            }
        }
        let mut bytes = Vec::new();
        for (seq, chunk) in chunks {
            assert_eq!(
                seq,
                bytes.len() as u64,
                "{direction} of pid {pid} with {remote}: gap or overlap at {seq}"
            );
            bytes.extend_from_slice(&chunk);
        }
        bytes
    }

    /// Sum of `drop` records' (count, bytes) for `reason`.
    pub fn dropped(&self, reason: &str) -> (u64, u64) {
        self.records
            .iter()
            .filter(|r| r["kind"] == "drop" && r["reason"] == reason)
            .fold((0, 0), |(c, b), r| (c + r["count"].as_u64().unwrap(), b + r["bytes"].as_u64().unwrap()))
    }
}

/// GET `path` from a sensor's `--metrics` endpoint on loopback `port`:
/// (status, body); None while nothing listens there.
pub fn metrics_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Joins a held connection mid-stream: runs `tests/programs/<hold>` (a
/// `*_hold.py`, which opens and uses its connection, makes `dir/waiting`
/// and waits for `dir/go`) on the venv's Python with `args` and `dir`,
/// starts a sensor capturing `port` exactly once it waits, lets it go on,
/// and once it exited successfully stops the sensor. Returns the capture
/// and what the program wrote to `dir/peer.json`.
pub fn capture_held(hold: &str, args: &[&str], dir: &Path, port: u16) -> (Capture, Value) {
    use crate::peers::{program, venv_python, SpawnGuarded};
    let mut client = Command::new(venv_python()).arg(program(hold)).args(args).arg(dir).spawn_guarded();
    wait_for_file(&dir.join("waiting"), || client.try_wait().unwrap().is_none());
    let port = port.to_string();
    let mut args = vec!["--port", &port];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    std::fs::write(dir.join("go"), b"").unwrap();
    assert!(wait_child(&mut client, hold).success(), "{hold} failed");
    let cap = sensor.stop();
    let peer = std::fs::read_to_string(dir.join("peer.json")).unwrap();
    (cap, serde_json::from_str(&peer).unwrap())
}

/// The sum of the samples on the metrics endpoint at `port` whose line
/// starts with `prefix` (name and labels).
pub fn metric_sum(port: u16, prefix: &str) -> f64 {
    let (status, text) = metrics_get(port, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// An exporter's outage under load: calls `burst` until it has run `bursts`
/// times and at least `min` has passed (however slow the machine: a loaded
/// one made only some bursts within the time, and shed too little to show a
/// bound), sampling every 200 ms the sensor's heap and the metric samples
/// starting with `metric`. Returns the peaks (RssAnon KiB, metric).
pub fn load_while_sampling(
    sensor_pid: u32,
    metrics_port: u16,
    metric: &str,
    bursts: u32,
    min: Duration,
    mut burst: impl FnMut(),
) -> (u64, f64) {
    let start = Instant::now();
    let (mut made, mut peak, mut peak_metric) = (0, 0, 0.0f64);
    while made < bursts || start.elapsed() < min {
        assert!(start.elapsed() < TIMEOUT, "the bursts did not finish in {TIMEOUT:?}");
        if made < bursts {
            burst();
            made += 1;
        }
        peak = peak.max(rss_anon_kib(sensor_pid));
        peak_metric = peak_metric.max(metric_sum(metrics_port, metric));
        std::thread::sleep(Duration::from_millis(200));
    }
    (peak, peak_metric)
}

/// A process's anonymous resident memory in KiB: its heap, where an
/// exporter's queue lives (the ring buffer's shared pages are not in it).
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What the sensor holds of the files under `dir`: descriptors, uprobe
/// links (a uprobe_multi link's fdinfo names its file) and mappings. Other
/// programs on the host may come and go with probed files of their own: only
/// the test's files are counted.
pub fn held_under(pid: u32, dir: &Path) -> (usize, usize, usize) {
    let dir = dir.display().to_string();
    let (mut files, mut links) = (0, 0);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = std::fs::read_link(fd.path()).map(|t| t.display().to_string()).unwrap_or_default();
        if target.contains(&dir) {
            files += 1;
        } else if target == "anon_inode:bpf_link" {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()));
            links += usize::from(
                info.unwrap_or_default().lines().any(|l| l.starts_with("path:") && l.contains(&dir)),
            );
        }
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    (files, links, maps.lines().filter(|l| l.contains(&dir)).count())
}

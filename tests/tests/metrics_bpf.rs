//! `--metrics ADDR`: `/readyz` is 503 while probes attach and 200 after,
//! `/healthz` 200 while the capture loop turns, and `/metrics` — read by
//! prometheus_client's OpenMetrics parser — counts exactly what the records
//! say: records by kind, captured bytes, drops by reason, attach successes
//! and failures, API subscribers.

use nettap_e2e::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every sample of `/metrics`, through the parser.
fn samples(port: u16) -> Vec<Value> {
    let (status, text) = metrics_get(port, "/metrics").expect("metrics endpoint");
    assert_eq!(status, 200);
    let mut parser = Command::new(venv_python())
        .arg(program("metrics_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The samples but the ring buffer's, which move with any process's exec
/// events on the host (a quiet sensor is not a quiet ring on a busy machine).
fn settled(samples: Vec<Value>) -> Vec<Value> {
    samples.into_iter().filter(|s| !s["name"].as_str().unwrap().starts_with("nettap_ring_buffer_")).collect()
}

/// The value of sample `name` with exactly `labels` (0 when absent).
fn value(samples: &[Value], name: &str, labels: Value) -> u64 {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"] == labels)
        .map_or(0, |s| s["value"].as_f64().unwrap() as u64)
}

#[test]
fn metrics_and_health_say_what_the_records_say() {
    let port = free_port();
    let port_s = port.to_string();
    let burst_port = free_port();
    let burst_s = burst_port.to_string();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let (mut server, dir) = http_peer_server(port);
    let api = format!("unix:{}", dir.path().join("api.sock").display());
    // A file named as OpenSSL that has none: an attach failure on every kernel.
    let not_ssl = dir.path().join("not-openssl");
    std::fs::copy("/bin/true", &not_ssl).unwrap();

    // Watch /readyz from before the sensor starts until it answers 200.
    let poll = std::thread::spawn(move || {
        let (start, mut seen) = (Instant::now(), Vec::new());
        while start.elapsed() < Duration::from_secs(120) {
            if let Some((status, _)) = metrics_get(metrics_port, "/readyz") {
                if seen.last() != Some(&status) {
                    seen.push(status);
                }
                if status == 200 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    });
    let sensor = Sensor::start_with_env(
        &[
            "--port",
            &port_s,
            "--port",
            &burst_s,
            "--metrics",
            &metrics,
            "--api",
            &api,
            "--raw",
            // Small enough that the burst below overflows it.
            "--ring-buffer-bytes",
            "32768",
            "--max-bytes-per-call",
            "16777216",
        ],
        &[
            ("NETTAP_OPENSSL_STATIC", "true"),
            ("NETTAP_OPENSSL_BINARY", not_ssl.to_str().unwrap()),
            // The burst can lose a close in the full ring; the socket listing
            // writes it within two periods, and the metrics must wait for it.
            ("NETTAP_RECONCILE_SECS", "1"),
        ],
    );
    assert_eq!(poll.join().unwrap(), [503, 200], "/readyz while probes attach, then once attached");
    assert_eq!(metrics_get(metrics_port, "/healthz"), Some((200, "ok\n".into())));
    assert_eq!(metrics_get(metrics_port, "/nothing-here").map(|r| r.0), Some(404));

    // A subscriber of the API is counted while it is there.
    let mut tail = KillOnDrop(
        Command::new(nettap_bin()).args(["tail", "--connect", &api]).stdout(Stdio::null()).spawn().unwrap(),
    );
    let start = Instant::now();
    while value(&samples(metrics_port), "nettap_api_subscribers", json!({})) != 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "the subscriber was never counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = tail.kill();
    let _ = tail.wait();

    for path in ["/one", "/two", "/three"] {
        let mut c = Command::new("curl")
            .args(["-sS", "--fail", "-o", "/dev/null"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .spawn()
            .unwrap();
        assert!(wait_child(&mut c, "curl").success());
    }
    // A burst the tiny ring cannot hold: drops.
    Exchange::start(None, "127.0.0.1", None, "127.0.0.1", burst_port, &[1 << 20, 1 << 20], &[]).finish();
    // Quiet: the same numbers twice, further apart than the 1 s tick that
    // brings drops and than the two 1 s listings that bring lost closes.
    let mut last = settled(samples(metrics_port));
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(2500));
        let now = settled(samples(metrics_port));
        if now == last {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the metrics never settled");
        last = now;
    }
    let snapshot = last;
    assert_eq!(value(&samples(metrics_port), "nettap_api_subscribers", json!({})), 0, "the subscriber left");
    let cap = sensor.stop();
    let _ = server.kill();
    let _ = server.wait();

    // Records by kind: exactly the records written.
    for kind in ["conn", "http", "data", "drop"] {
        let written = cap.records.iter().filter(|r| r["kind"] == kind).count() as u64;
        assert_eq!(
            value(&snapshot, "nettap_records_total", json!({"kind": kind})),
            written,
            "{kind} records"
        );
    }
    assert_eq!(
        value(&snapshot, "nettap_records_total", json!({"kind": "http"})),
        6,
        "three exchanges, both ends"
    );
    // Captured bytes: the data records' payloads (--raw writes every chunk).
    let captured: u64 =
        cap.records.iter().filter(|r| r["kind"] == "data").map(|r| payload(r).len() as u64).sum();
    assert_eq!(value(&snapshot, "nettap_captured_bytes_total", json!({"source": "kernel"})), captured);
    // Bytes by kind: each connection's captured bytes under the kind of its
    // exchanges, `data` for the burst's (no protocol parsed).
    let mut conns: std::collections::HashMap<String, (u64, bool)> = Default::default();
    for r in cap.records.iter().filter(|r| r["conn"].is_object()) {
        let c =
            conns.entry(format!("{} {} {}", r["pid"], r["conn"]["local"], r["conn"]["remote"])).or_default();
        if r["kind"] == "data" {
            c.0 += payload(r).len() as u64;
        }
        c.1 |= r["kind"] == "http";
    }
    let bytes_of = |http: bool| conns.values().filter(|c| c.1 == http).map(|c| c.0).sum::<u64>();
    let (http_bytes, data_bytes) = (bytes_of(true), bytes_of(false));
    assert!(http_bytes > 0 && data_bytes > 0, "{conns:?}");
    assert_eq!(value(&snapshot, "nettap_record_bytes_total", json!({"kind": "http"})), http_bytes);
    assert_eq!(value(&snapshot, "nettap_record_bytes_total", json!({"kind": "data"})), data_bytes);
    // Drops: the drop records' counts and bytes.
    let (count, bytes) = cap.dropped("ringbuf_full");
    assert!(count > 0, "the burst overflowed nothing");
    assert_eq!(value(&snapshot, "nettap_dropped_total", json!({"reason": "ringbuf_full"})), count);
    assert_eq!(value(&snapshot, "nettap_dropped_bytes_total", json!({"reason": "ringbuf_full"})), bytes);
    // Attachments: every kernel probe the log names, and the named non-OpenSSL file's four failures.
    let attached = cap
        .log
        .lines()
        .filter(|l| l.contains("probe attached") && l.contains("ok=true") && l.contains("target=\"kernel\""))
        .count() as u64;
    let hook = if cap.log.contains("hook=\"kprobe\"") { "kprobe" } else { "tracepoint" };
    let kernel_probes: u64 = snapshot
        .iter()
        .filter(|s| s["name"] == "nettap_probes_attached_total" && s["labels"]["library"] == "kernel")
        .map(|s| s["value"].as_f64().unwrap() as u64)
        .sum();
    assert_eq!(kernel_probes, attached, "kernel probes attached ({hook} path)");
    let failed = json!({"probe_type": "uprobe", "library": "not-openssl", "reason": "missing_symbol"});
    assert_eq!(value(&snapshot, "nettap_probe_failures_total", failed), 4, "SSL_read/_ex, SSL_write/_ex");
}

/// Sends SIGCONT when dropped: a failing test leaves no stopped sensor.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// A system call, not `kill(1)`: a program started while the sensor is
/// stopped waits at exec for the sensor's exec gate.
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Drains (of the fill-at-drain histogram) that found more than `ratio` of the ring waiting.
fn drains_above(samples: &[Value], ratio: &str) -> u64 {
    value(samples, "nettap_ring_buffer_drain_fill_ratio_count", json!({}))
        - value(samples, "nettap_ring_buffer_drain_fill_ratio_bucket", json!({"le": ratio}))
}

/// The ring buffer's fill: a sensor stopped (SIGSTOP) while an exchange of
/// known size runs cannot read its ring, so it finds the whole exchange
/// waiting when it goes on (SIGCONT): one drain sees more than half of the
/// 4 MiB ring full (2 MiB of payload, each byte once sent and once received
/// on both ends), the reader's byte count grows by at least that much, and
/// the fill is back near zero once drained. A stopped sensor serves no
/// scrape, so the rise is read from the drains' histogram, which records the
/// fill each drain began with.
#[test]
fn ring_buffer_fill_rises_while_the_reader_is_stopped_and_drains_after() {
    const SIDE: usize = 1 << 18;
    let port = free_port();
    let port_s = port.to_string();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let sensor = Sensor::start(&[
        "--port",
        &port_s,
        "--metrics",
        &metrics,
        "--ring-buffer-bytes",
        "4194304",
        "--max-bytes-per-call",
        "16777216",
    ]);
    // A stop that lands inside a drain (another process's exec event woke
    // it) lets that drain read the whole exchange without a new look at the
    // fill: tried again then, a few times at most.
    let mut found = false;
    for attempt in 1..=3 {
        // The client is running before the sensor stops (no exec waits for it).
        let hold = tempfile::tempdir().unwrap();
        let go = hold.path().join("go");
        let exchange = Exchange::server(None, "127.0.0.1", port, &[SIDE, SIDE]).client(
            None,
            "127.0.0.1",
            &["--hold-at", "0", "--hold-file", go.to_str().unwrap()],
        );
        wait_for_file(&hold.path().join("go.waiting"), || true);
        let before = samples(metrics_port);
        assert_eq!(value(&before, "nettap_ring_buffer_size_bytes", json!({})), 4 << 20);
        assert!(
            value(&before, "nettap_ring_buffer_fill_bytes", json!({})) < 64 << 10,
            "a busy ring before the load"
        );

        let stopped = Stopped::stop(sensor.pid());
        std::fs::write(&go, b"").unwrap();
        exchange.finish();
        drop(stopped);

        let payload = 4 * 2 * SIDE as u64;
        let start = Instant::now();
        let after = loop {
            let now = samples(metrics_port);
            let read = value(&now, "nettap_ring_buffer_read_bytes_total", json!({}))
                - value(&before, "nettap_ring_buffer_read_bytes_total", json!({}));
            if read >= payload {
                break now;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the reader took {read} of {payload} bytes");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            value(&after, "nettap_ring_buffer_fill_bytes", json!({})) < 64 << 10,
            "the ring was not drained"
        );
        let full = drains_above(&after, "0.5") - drains_above(&before, "0.5");
        assert!(full <= 1, "{full} drains found more than half the ring: one exchange fills it once");
        if full == 1 {
            found = true;
            break;
        }
        eprintln!("attempt {attempt}: the stop came inside a drain");
    }
    assert!(found, "no drain found the stopped time's records: more than half the ring");
    let cap = sensor.stop();
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0), "the ring overflowed: the fill says less than the load");
}

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
        &[("NETTAP_OPENSSL_STATIC", "true"), ("NETTAP_OPENSSL_BINARY", not_ssl.to_str().unwrap())],
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
    // Quiet: the same numbers twice, a second apart (closes and drops come with the 1 s tick).
    let mut last = samples(metrics_port);
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = samples(metrics_port);
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

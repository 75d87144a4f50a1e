//! Process churn (issue 27): short-lived processes (loops of `curl`s, as
//! cron jobs and shell loops make) cost the sensor little and leak nothing:
//! every exchange of every process is captured exactly, the sensor's
//! memory after the churn is within a bound of its memory after warm-up,
//! and its tables are back to empty at the end.

use nettap_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs after which the sensor's memory is measured the first time.
const WARM_UP: usize = 300;
/// Runs of the churn proper.
const CHURN: usize = 1200;
/// A small ring: its pages are all resident after the warm-up's records
/// (a fresh ring's pages count in RSS as the records first reach them).
const RING: &str = "1048576";
/// Losses the test's traffic could suffer (others, such as Go TLS calls of
/// unrelated programs on the host, come before the port filter applies).
const OURS: &[&str] = &[
    "ringbuf_full",
    "ringbuf_full_event",
    "inflight_table_full",
    "user_memory_unreadable",
    "conn_table_evicted",
    "conn_tracker_evicted",
    "bpf_recursion_miss",
];
/// The whole churn must fit in this (bounded, like every load loop).
const CHURN_TIME: Duration = Duration::from_secs(240);
/// Growth of the sensor's resident memory allowed over the churn.
const RSS_GROWTH_PERCENT: u64 = 5;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Processes started together, then waited for.
const BATCH: usize = 8;

/// `n` curl processes, `BATCH` at a time; their pids.
fn curls(n: usize, url: &str, deadline: Instant) -> Vec<u32> {
    let mut pids = Vec::with_capacity(n);
    while pids.len() < n {
        assert!(Instant::now() < deadline, "the churn did not finish within {CHURN_TIME:?}");
        let mut batch: Vec<_> = (0..BATCH.min(n - pids.len()))
            .map(|_| {
                Command::new("curl")
                    .args(["-sS", "--fail", "-o", "/dev/null", url])
                    .stdout(Stdio::null())
                    .spawn_guarded()
            })
            .collect();
        for child in &mut batch {
            pids.push(child.id());
            assert!(wait_child(child, "curl").success(), "curl failed");
        }
    }
    pids
}

/// The numbers of the sensor's `tables at the end` log line.
fn tables(log: &str) -> HashMap<String, u64> {
    let line = log.lines().find(|l| l.contains("tables at the end")).expect("no `tables at the end` line");
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim_matches('"').parse().ok()?)))
        .collect()
}

#[test]
fn short_lived_processes_cost_little_and_leak_nothing() {
    let root = tempfile::tempdir().unwrap();
    let body = "churn body\n".repeat(20);
    std::fs::write(root.path().join("f.txt"), &body).unwrap();
    let port = free_port();
    let mut server = Command::new(python())
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
        .current_dir(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < TIMEOUT && server.try_wait().unwrap().is_none(),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let server_pid = server.id();

    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s, "--ring-buffer-bytes", RING]);
    let url = format!("http://127.0.0.1:{port}/f.txt");
    let deadline = Instant::now() + CHURN_TIME;
    let began = Instant::now();
    let mut pids = curls(WARM_UP, &url, deadline);
    std::thread::sleep(Duration::from_secs(2));
    let warm = rss_kib(sensor.pid());
    pids.extend(curls(CHURN, &url, deadline));
    let took = began.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(sensor.pid());
    let cap = sensor.stop();
    eprintln!(
        "{} processes in {:.1} s; sensor RSS {warm} KiB after warm-up, {after} KiB after the churn",
        pids.len(),
        took.as_secs_f64()
    );

    // Every exchange of every process, exactly once.
    let mut by_pid: HashMap<u32, Vec<&Value>> = HashMap::new();
    for r in &cap.records {
        if let Some(pid) = r["pid"].as_u64() {
            by_pid.entry(pid as u32).or_default().push(r);
        }
    }
    let mut wrong = Vec::new();
    for &pid in &pids {
        let recs = by_pid.remove(&pid).unwrap_or_default();
        let events: Vec<&str> =
            recs.iter().filter(|r| r["kind"] == "conn").map(|r| r["event"].as_str().unwrap()).collect();
        let http: Vec<&&Value> = recs.iter().filter(|r| r["kind"] == "http").collect();
        let ok = events == ["open", "close"]
            && http.len() == 1
            && http[0]["response"]["status"] == 200
            && http[0]["response"]["body"] == body.as_str()
            && http[0]["conn"]["role"] == "client";
        if !ok {
            wrong.push(format!("curl {pid}: conn {events:?}, {} http", http.len()));
        }
    }
    let server_events = by_pid.remove(&server_pid).unwrap_or_default();
    let count = |e: &str| server_events.iter().filter(|r| r["kind"] == "conn" && r["event"] == e).count();
    assert_eq!(
        (count("open"), count("close"), count("midstream")),
        (pids.len(), pids.len(), 0),
        "server side"
    );
    let shown: Vec<_> = wrong.iter().take(10).collect();
    assert!(wrong.is_empty(), "{} of {} processes wrong: {shown:#?}", wrong.len(), pids.len());
    let drops: Vec<&Value> = cap
        .records
        .iter()
        .filter(|r| r["kind"] == "drop" && OURS.contains(&r["reason"].as_str().unwrap()))
        .collect();
    assert!(drops.is_empty(), "nothing lost: {drops:?}");

    // Nothing kept for processes that are gone.
    let t = tables(&cap.log);
    for table in ["connections", "aliases", "sessions", "agent_processes"] {
        assert_eq!(t.get(table), Some(&0), "{table} at the end: {t:?}");
    }
    assert!(
        after <= warm + warm * RSS_GROWTH_PERCENT / 100,
        "sensor RSS grew from {warm} to {after} KiB over {CHURN} processes"
    );
}

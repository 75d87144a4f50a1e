//! Process churn (issue 27): short-lived processes started at 200 a second,
//! half of them TLS clients each from a fresh copy of the program and of
//! libssl (as cron jobs, shell loops, CI runners and `go run` make them),
//! cost the sensor little and leak nothing: every exchange of every process
//! is captured exactly, the sensor's memory after the churn is within 5 % of
//! its memory after warm-up, its tables are back to empty at the end, and it
//! holds nothing of the deleted copies.

use nettap_e2e::inspect::rss_kib;
use nettap_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Clients after which the sensor's memory is measured the first time.
const WARM_UP: usize = 1000;
/// Clients of the churn proper (at 200 a second: 25 s).
const CHURN: usize = 5000;
/// Clients started per second.
const RATE: &str = "200";
/// TLS clients per fresh copy of the client and libssl.
const PER_COPY: &str = "50";
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
    "tls_socket_unknown",
    "conn_closed_in_call",
];
/// Growth of the sensor's resident memory allowed over the churn.
const RSS_GROWTH_PERCENT: u64 = 5;

/// The numbers of the sensor's `tables at the end` log line.
fn tables(log: &str) -> HashMap<String, u64> {
    let line = log.lines().find(|l| l.contains("tables at the end")).expect("no `tables at the end` line");
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim_matches('"').parse().ok()?)))
        .collect()
}

/// tests/programs/churn_client.c, linked to libssl through an rpath of its
/// own directory (so each copy uses the libssl copied beside it).
fn build_client(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("churn_client");
    let st = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(program("churn_client.c"))
        .args(["-lssl", "-lcrypto", "-Wl,--disable-new-dtags,-rpath,$ORIGIN"])
        .status()
        .expect("gcc is required");
    assert!(st.success(), "building churn_client.c (libssl-dev is required)");
    out
}

#[test]
fn two_hundred_processes_a_second_half_of_them_tls_on_fresh_libssl_copies() {
    let tls = TlsSetup::new();
    let plain = free_port();
    let body = "churn body\n".repeat(20);
    let server = format!(
        "    listen 127.0.0.1:{} ssl;\n    listen 127.0.0.1:{plain};\n    \
         ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{ root WWW; }}",
        tls.port,
        tls.cert.display(),
        tls.key.display(),
    );
    let _nginx = Nginx::start(plain, &server, &[("f.txt", body.as_bytes())]);
    let build = tempfile::tempdir().unwrap();
    let client = build_client(build.path());
    let work = tempfile::tempdir().unwrap();

    let ports = [plain.to_string(), tls.port_s.clone()];
    let sensor = Sensor::start(&["--port", &ports[0], "--port", &ports[1], "--ring-buffer-bytes", RING]);
    let (reached, go, report) =
        (build.path().join("warm.reached"), build.path().join("warm.go"), build.path().join("report.json"));
    let mut driver = Command::new(python())
        .arg(program("churn.py"))
        .arg("--client")
        .arg(&client)
        .arg("--libdir")
        .arg(system_lib_dir())
        .arg("--work")
        .arg(work.path())
        .args(["--plain-port", &ports[0], "--tls-port", &ports[1], "--rate", RATE, "--per-copy", PER_COPY])
        .args(["--count", &(WARM_UP + CHURN).to_string(), "--warm", &WARM_UP.to_string()])
        .arg("--sensor-log")
        .arg(sensor.dir.path().join("log"))
        .arg("--warm-reached")
        .arg(&reached)
        .arg("--warm-file")
        .arg(&go)
        .arg("--report")
        .arg(&report)
        .spawn_guarded();
    wait_for_file(&reached, || driver.try_wait().unwrap().is_none());
    std::thread::sleep(Duration::from_secs(2));
    let warm = rss_kib(sensor.pid());
    std::fs::write(&go, b"").unwrap();
    assert!(wait_child(&mut driver, "churn.py").success(), "the churn driver failed");
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(sensor.pid());
    // The deleted copies' probes go at the sensor's next look after an exit.
    let start = std::time::Instant::now();
    while held_under(sensor.pid(), work.path()) != (0, 0, 0) && start.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = held_under(sensor.pid(), work.path());
    let cap = sensor.stop();
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let clients = report["clients"].as_array().unwrap();
    eprintln!(
        "{} clients ({} copies) in {:.1} s after warm-up: {:.0} a second; sensor RSS {warm} KiB after warm-up, \
         {after} KiB after the churn",
        clients.len(),
        report["copies"],
        report["seconds"].as_f64().unwrap(),
        CHURN as f64 / report["seconds"].as_f64().unwrap()
    );
    assert_eq!(held, (0, 0, 0), "descriptors, links and mappings of deleted copies the sensor still holds");

    // Every exchange of every process, exactly once, from the right source.
    let mut by_pid: HashMap<u32, Vec<&Value>> = HashMap::new();
    for r in &cap.records {
        if let Some(pid) = r["pid"].as_u64() {
            by_pid.entry(pid as u32).or_default().push(r);
        }
    }
    let mut wrong = Vec::new();
    for c in clients {
        let (pid, kind, path) =
            (c[0].as_u64().unwrap() as u32, c[1].as_str().unwrap(), c[2].as_str().unwrap());
        if c[3] != 0 {
            wrong.push(format!("{kind} client {pid} exited {}", c[3]));
            continue;
        }
        let recs = by_pid.remove(&pid).unwrap_or_default();
        let events: Vec<&str> =
            recs.iter().filter(|r| r["kind"] == "conn").map(|r| r["event"].as_str().unwrap()).collect();
        let http: Vec<&&Value> = recs.iter().filter(|r| r["kind"] == "http").collect();
        let (source, is_tls) = if kind == "tls" { ("openssl", true) } else { ("kernel", false) };
        let ok = events == ["open", "close"]
            && http.len() == 1
            && http[0]["request"]["path"] == path
            && http[0]["response"]["status"] == 200
            && http[0]["response"]["body"] == body.as_str()
            && http[0]["conn"]["role"] == "client"
            && http[0]["conn"]["tls"] == is_tls
            && http[0]["source"] == source;
        if !ok {
            let got = http.first().map(|h| (h["source"].clone(), h["request"]["path"].clone()));
            wrong.push(format!("{kind} client {pid}: conn {events:?}, {} http {got:?}", http.len()));
        }
    }
    // nginx's side: one open, one close and one exchange per client and port.
    for (port, kind) in [(plain, "plain"), (tls.port, "tls")] {
        let ours = |r: &&Value| r["conn"]["local"].as_str().is_some_and(|l| l.ends_with(&format!(":{port}")));
        let count = |k: &str, e: &str| {
            cap.records
                .iter()
                .filter(ours)
                .filter(|r| r["kind"] == k && (e.is_empty() || r["event"] == e))
                .count()
        };
        let n = clients.iter().filter(|c| c[1] == kind).count();
        assert_eq!(
            (count("conn", "open"), count("conn", "close"), count("conn", "midstream"), count("http", "")),
            (n, n, 0, n),
            "{kind} server side"
        );
    }
    let shown: Vec<_> = wrong.iter().take(10).collect();
    assert!(wrong.is_empty(), "{} of {} processes wrong: {shown:#?}", wrong.len(), clients.len());
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

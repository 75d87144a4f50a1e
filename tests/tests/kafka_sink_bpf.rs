//! The Kafka sink (`--kafka-brokers`, `--kafka-topic`) against a real broker
//! (KRaft, tests/src/kafka.rs), read back with kafka-python: every record
//! the sensor writes to its JSON Lines file arrives in the topic with the
//! same bytes, keyed by connection, each connection's records in one
//! partition in file order (a topic of three partitions); over TLS with
//! SASL/PLAIN and SCRAM-SHA-256; and with the broker killed under load and
//! started again, the sensor's memory stays within its buffer's bound, what
//! it shed is counted as drop records, nothing arrives twice (the idempotent
//! producer's retries across the restart), and delivery resumes; and with
//! the broker's answers to Produce requests lost in flight (a relay cuts the
//! connection after the broker wrote), every record is in the topic once.

use nettap_e2e::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAGE: &str = "a page for the Kafka sink\n";
const TOPIC: &str = "nettap-records";

fn nginx(port: u16, files: &[(&str, &[u8])]) -> Nginx {
    Nginx::start(port, &format!("    listen 127.0.0.1:{port};\n    location / {{ root WWW; }}"), files)
}

/// `n` requests of one curl on one keep-alive connection.
fn load(port: u16, path: &str, n: u32) {
    let mut c = Command::new("curl")
        .args(["-sS", "--fail", "-A", "kafka-sink-test/1"])
        .arg(format!("http://127.0.0.1:{port}{path}?n=[1-{n}]"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "curl").success());
}

/// The topic's values as text (they are JSON), checking that each record's
/// key names its connection.
fn values(got: &[TopicRecord]) -> Vec<String> {
    got.iter()
        .map(|r| {
            let text = String::from_utf8(r.value.clone()).expect("a record is JSON text");
            assert!(!text.ends_with('\n'), "one record, no newline: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            let key =
                v["conn"]["local"].as_str().map(|l| format!("{l}-{}", v["conn"]["remote"].as_str().unwrap()));
            assert_eq!(r.key, key, "the key of {text}");
            text
        })
        .collect()
}

/// Every line of the file is in the topic, byte for byte, and nothing else;
/// each key's records are in one partition, in the file's order.
fn check_same_records(file: &str, got: &[TopicRecord]) {
    let lines: Vec<&str> = file.lines().collect();
    let mut want = lines.clone();
    want.sort_unstable();
    let mut have = values(got);
    have.sort_unstable();
    assert_eq!(have.len(), want.len(), "records in the topic against lines in the file");
    assert!(have.iter().zip(&want).all(|(a, b)| a == b), "the topic's records are not the file's lines");

    let mut partition_of: HashMap<&str, u32> = HashMap::new();
    let mut in_topic: HashMap<&str, Vec<&[u8]>> = HashMap::new();
    for r in got {
        let Some(key) = r.key.as_deref() else { continue };
        assert_eq!(*partition_of.entry(key).or_insert(r.partition), r.partition, "{key} in two partitions");
        in_topic.entry(key).or_default().push(&r.value);
    }
    let mut in_file: HashMap<String, Vec<&[u8]>> = HashMap::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        if let (Some(local), Some(remote)) = (v["conn"]["local"].as_str(), v["conn"]["remote"].as_str()) {
            in_file.entry(format!("{local}-{remote}")).or_default().push(l.as_bytes());
        }
    }
    assert_eq!(in_topic.len(), in_file.len(), "connections");
    for (key, records) in &in_file {
        assert_eq!(in_topic.get(key.as_str()), Some(records), "{key}: the topic's order is not the file's");
    }
}

#[test]
fn every_record_arrives_byte_identical_keyed_by_connection_and_in_order() {
    let broker = KafkaBroker::start(free_port(), free_port());
    broker.create_topic(TOPIC, 3);
    let h1 = free_port();
    let _nginx = nginx(h1, &[("page.txt", PAGE.as_bytes())]);
    let brokers = format!("127.0.0.1:{}", broker.port);
    let sensor =
        Sensor::start(&["--port", &h1.to_string(), "--kafka-brokers", &brokers, "--kafka-topic", TOPIC]);
    // Eight connections of five requests each.
    for _ in 0..8 {
        load(h1, "/page.txt", 5);
    }
    let cap = sensor.stop();
    let http = cap.records.iter().filter(|r| r["kind"] == "http").count();
    assert_eq!(http, 80, "both ends of 40 exchanges");
    let got = broker.read_topic(TOPIC, cap.text.lines().count());
    check_same_records(&cap.text, &got);
    let partitions: HashSet<u32> = got.iter().map(|r| r.partition).collect();
    // 16 connection ends over 3 partitions: all in one would be a 3^-15 chance.
    assert!(partitions.len() > 1, "every connection went to partition {partitions:?}");
}

#[test]
fn over_tls_with_sasl_plain_and_scram() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["127.0.0.1"]);
    let secure = SecureListener {
        port: free_port(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        password: "a-sasl-password".into(),
    };
    let broker = KafkaBroker::start_with(free_port(), free_port(), Some(&secure));
    broker.create_topic(TOPIC, 1);
    let h1 = free_port();
    let _nginx = nginx(h1, &[("page.txt", PAGE.as_bytes())]);
    let brokers = format!("127.0.0.1:{}", secure.port);
    let ca = pki.ca.display().to_string();
    let args = [
        "--port",
        &h1.to_string(),
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        TOPIC,
        "--kafka-ca",
        &ca,
        "--kafka-sasl-mechanism",
        "PLAIN",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [("NETTAP_KAFKA_SASL_USERNAME", "nettap"), ("NETTAP_KAFKA_SASL_PASSWORD", "a-sasl-password")];
    let sensor = Sensor::start_with_env(&args, &env);
    load(h1, "/page.txt", 3);
    let cap = sensor.stop();
    assert_eq!(cap.records.iter().filter(|r| r["kind"] == "http").count(), 6);
    assert!(!cap.log.contains("a-sasl-password"), "the password was logged");
    check_same_records(&cap.text, &broker.read_topic(TOPIC, cap.text.lines().count()));

    // SCRAM-SHA-256 (a salted challenge instead of the password), to a topic of its own.
    let scram_topic = "nettap-scram";
    broker.create_topic(scram_topic, 1);
    let scram: Vec<&str> = args
        .iter()
        .map(|a| match *a {
            "PLAIN" => "SCRAM-SHA-256",
            TOPIC => scram_topic,
            a => a,
        })
        .collect();
    let sensor = Sensor::start_with_env(&scram, &env);
    load(h1, "/page.txt", 2);
    let cap = sensor.stop();
    assert_eq!(cap.records.iter().filter(|r| r["kind"] == "http").count(), 4);
    check_same_records(&cap.text, &broker.read_topic(scram_topic, cap.text.lines().count()));

    // A wrong password: nothing is delivered, and the sensor says why.
    let env = [("NETTAP_KAFKA_SASL_USERNAME", "nettap"), ("NETTAP_KAFKA_SASL_PASSWORD", "wrong")];
    let sensor = Sensor::start_with_env(&args, &env);
    load(h1, "/page.txt", 1);
    sensor.wait_for_log(&["Kafka producer error", "Authentication failed"]);
    let cap = sensor.stop();
    assert!(!cap.log.contains("\"wrong\""), "the password was logged");
}

#[test]
fn a_stopped_broker_costs_the_buffer_bound_sheds_counted_and_duplicates_nothing() {
    const QUEUE: u64 = 1 << 20;
    let mut broker = KafkaBroker::start(free_port(), free_port());
    broker.create_topic(TOPIC, 1);
    let (h1, metrics) = (free_port(), free_port());
    let big: String = (0..64 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let _nginx = nginx(h1, &[("page.txt", PAGE.as_bytes()), ("big.txt", big.as_bytes())]);
    let brokers = format!("127.0.0.1:{}", broker.port);
    let (port, queue, metrics_addr) = (h1.to_string(), QUEUE.to_string(), format!("127.0.0.1:{metrics}"));
    let sensor = Sensor::start(&[
        "--port",
        &port,
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        TOPIC,
        "--kafka-queue-bytes",
        &queue,
        "--metrics",
        &metrics_addr,
    ]);
    load(h1, "/page.txt", 50);
    let start = Instant::now();
    while metric_sum(metrics, r#"nettap_exported_total{exporter="kafka""#) < 100.0 {
        assert!(start.elapsed() < TIMEOUT, "the first 100 records were never delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = rss_anon_kib(sensor.pid());

    // The broker is killed in the middle of a burst (records in flight may
    // have been written without their acknowledgement: the retry must not
    // write them twice; the window is narrow, so with enable.idempotence=false
    // this passed too in the tries made: the relay test below is the one
    // that fails without idempotence) and stays down for at least 8 s
    // while 500 exchanges with 64 KiB bodies (some 65 MB of records, both
    // ends) are made.
    let first_burst = std::thread::spawn(move || load(h1, "/big.txt", 100));
    std::thread::sleep(Duration::from_millis(300));
    broker.stop();
    first_burst.join().unwrap();
    let queue_metric = r#"nettap_export_queue_bytes{exporter="kafka""#;
    let (peak, queued) =
        load_while_sampling(sensor.pid(), metrics, queue_metric, 4, Duration::from_secs(8), || {
            load(h1, "/big.txt", 100)
        });
    assert!(queued > 0.0 && queued <= QUEUE as f64, "queue bytes {queued}");
    let shed_so_far = metric_sum(metrics, r#"nettap_dropped_total{reason="export_queue_full"}"#);
    assert!(shed_so_far > 0.0, "nothing counted as shed while the broker was down");
    let grown = peak.saturating_sub(before);
    eprintln!("sensor heap {before} KiB before, {peak} KiB at most while the broker was down (+{grown} KiB)");
    // The buffer plus the sensor's own working set (parsers, buffers).
    let bound_kib = QUEUE / 1024 + 8 * 1024;
    assert!(grown < bound_kib, "the sensor grew by {grown} KiB with a {QUEUE} B buffer");

    broker.resume();
    sensor.wait_for_log(&["Kafka delivery resumed"]);
    // The backlog goes out first: the exchanges after it must find room.
    let start = Instant::now();
    while metric_sum(metrics, queue_metric) > 0.0 {
        assert!(start.elapsed() < TIMEOUT, "the backlog never drained after the broker came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    load(h1, "/page.txt", 20);
    let cap = sensor.stop();

    let lines: Vec<&str> = cap.text.lines().collect();
    let (shed, shed_bytes) = cap.dropped("export_queue_full");
    let (failed, _) = cap.dropped("export_failed");
    // Without the bound, what was shed would have stayed in memory: far more
    // than the sensor grew (and than the buffer holds).
    let shown = 2 * grown.max(QUEUE / 1024);
    assert!(
        shed_bytes / 1024 > shown,
        "only {shed_bytes} B shed, the sensor grew {grown} KiB: the load does not show the bound"
    );
    let got = broker.read_topic(TOPIC, lines.len() - shed as usize - failed as usize);
    let have = values(&got);
    let distinct: HashSet<&str> = have.iter().map(String::as_str).collect();
    assert_eq!(distinct.len(), have.len(), "a record arrived twice");
    let file: HashSet<&str> = lines.iter().copied().collect();
    assert!(have.iter().all(|v| file.contains(v.as_str())), "a record the file does not have");
    assert_eq!(
        have.len() as u64 + shed + failed,
        lines.len() as u64,
        "every record is delivered or counted: {} delivered, {shed} shed, {failed} failed, {} lines",
        have.len(),
        lines.len()
    );
    // Delivery resumed: the 20 requests after the restart, both ends, all
    // arrived (and the 50 before the broker stopped).
    let small =
        have.iter().filter(|v| v.starts_with(r#"{"kind":"http""#) && v.contains("/page.txt?n=")).count();
    assert_eq!(small, 140, "the exchanges before the broker stopped and after it came back");
}

/// The idempotent producer, where its absence shows: tests/programs/kafka_relay.py
/// sits between the sensor and the broker (a listener the broker advertises
/// at the relay's port) and loses the broker's answer to the first three
/// Produce requests, closing the connection after the broker wrote their
/// records. librdkafka sends each again; the broker must keep one copy.
/// Run by hand with `--kafka-option enable.idempotence=false` added to the
/// sensor's arguments, this test fails ("records in the topic against lines
/// in the file", 70 against 28: the first batch, 14 records, arrived four
/// times); with the sensor's default it passes.
#[test]
fn produce_answers_lost_in_flight_write_nothing_twice() {
    const CUTS: usize = 3;
    let (relay_port, relayed) = (free_port(), free_port());
    let broker = KafkaBroker::start_relayed(free_port(), free_port(), relayed, relay_port);
    broker.create_topic(TOPIC, 1);
    let dir = tempfile::tempdir().unwrap();
    let (ready, cuts) = (dir.path().join("relay.ready"), dir.path().join("relay.out"));
    let mut relay = Command::new(python())
        .arg(program("kafka_relay.py"))
        .args([relay_port.to_string(), relayed.to_string(), CUTS.to_string()])
        .arg(&ready)
        .stdout(std::fs::File::create(&cuts).unwrap())
        .spawn_guarded();
    wait_for_file(&ready, || relay.try_wait().unwrap().is_none());
    let h1 = free_port();
    let _nginx = nginx(h1, &[("page.txt", PAGE.as_bytes())]);
    let brokers = format!("127.0.0.1:{relay_port}");
    let sensor =
        Sensor::start(&["--port", &h1.to_string(), "--kafka-brokers", &brokers, "--kafka-topic", TOPIC]);
    load(h1, "/page.txt", 5);
    let start = Instant::now();
    while std::fs::read_to_string(&cuts).unwrap().lines().count() < CUTS {
        assert!(start.elapsed() < Duration::from_secs(20), "the relay cut fewer than {CUTS} answers");
        std::thread::sleep(Duration::from_millis(100));
    }
    load(h1, "/page.txt", 5);
    let cap = sensor.stop();
    assert_eq!(cap.records.iter().filter(|r| r["kind"] == "http").count(), 20, "both ends of 10 exchanges");
    check_same_records(&cap.text, &broker.read_topic(TOPIC, cap.text.lines().count()));
}

/// The feedback loop a broker on a captured port would make: the broker's
/// side of the sensor's own produce requests is captured like any process's
/// traffic, and each of those records would be produced again, and captured
/// again. With the broker's port in `--port`, the sensor's own process is
/// never captured, the broker's records of the sensor's connection are held
/// back and counted (`sensor_own_traffic`), and the topic holds exactly the
/// records of the file, which has only the HTTP traffic. (With the filter
/// taken out of the capture loop this fails: the file then has `kafka`
/// records of client `nettap`: 34 in one run by hand.)
#[test]
fn a_captured_broker_port_exports_no_record_of_the_export() {
    let broker = KafkaBroker::start(free_port(), free_port());
    broker.create_topic(TOPIC, 1);
    let h1 = free_port();
    let _nginx = nginx(h1, &[("page.txt", PAGE.as_bytes())]);
    let brokers = format!("127.0.0.1:{}", broker.port);
    let sensor = Sensor::start(&[
        "--port",
        &h1.to_string(),
        "--port",
        &broker.port.to_string(),
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        TOPIC,
    ]);
    let pid = sensor.pid();
    load(h1, "/page.txt", 5);
    // Rounds of the loop, were there one (librdkafka sends every 100 ms).
    std::thread::sleep(Duration::from_secs(3));
    let cap = sensor.stop();
    assert!(cap.records.iter().all(|r| r["pid"] != pid), "the sensor captured itself");
    let own = cap.records.iter().filter(|r| r["kind"] == "kafka" && r["request"]["client_id"] == "nettap");
    assert_eq!(own.count(), 0, "the broker's side of the sensor's produce requests was written");
    let (held, _) = cap.dropped("sensor_own_traffic");
    assert!(held > 0, "the broker's side of the sensor's connection was never seen: the test shows nothing");
    assert_eq!(cap.records.iter().filter(|r| r["kind"] == "http").count(), 10, "both ends of 5 exchanges");
    check_same_records(&cap.text, &broker.read_topic(TOPIC, cap.text.lines().count()));
}

//! Kafka (issue 23): a real broker (KRaft, from Maven Central's jars on JDK
//! 17) with Kafka's own Java client (one topic per codec: gzip, snappy,
//! lz4, zstd batches; an idempotent producer, acks=all) and kafka-python
//! (gzip), each producing and then consuming its records. Every produced
//! record appears exactly once in the Produce requests at each end and
//! once in the client's Fetch responses, byte-exact (keys, values,
//! headers), with the right pid, addresses and role (the broker sends
//! stored batches with sendfile: its side says they were not captured);
//! bytes that stop being Kafka are a counted drop and raw data, not a crash.

use base64::Engine;
use nettap_e2e::*;
use serde_json::{json, Value};
use std::collections::HashMap;

const COUNT: usize = 6;
const CODECS: &[&str] = &["gzip", "snappy", "lz4", "zstd"];

/// The records the Java peer sends: every third value is binary.
fn java_records() -> Vec<Value> {
    (0..COUNT)
        .map(|i| {
            let value = if i % 3 == 2 {
                json!({"b64": base64::engine::general_purpose::STANDARD.encode([0xff, 0, i as u8])})
            } else {
                json!(format!("value-{i}"))
            };
            json!({"key": format!("key-{i}"), "value": value, "headers": [["trace", format!("t-{i}")]]})
        })
        .collect()
}

fn python_records() -> Vec<Value> {
    (0..COUNT)
        .map(|i| json!({"key": format!("key-{i}"), "value": format!("value-{i}"), "headers": [["trace", format!("t-{i}")]]}))
        .collect()
}

/// Topic ids to names, from every Metadata response captured.
fn topic_names(cap: &Capture) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for r in cap.records.iter().filter(|r| r["kind"] == "kafka" && r["request"]["api"] == "Metadata") {
        for t in r["response"]["topics"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (t["topic_id"].as_str(), t["name"].as_str()) {
                names.insert(id.to_string(), name.to_string());
            }
        }
    }
    names
}

/// The topic's partition objects in `side` (`request`/`response`) of `pid`'s
/// `api` records, with each record that carried it.
fn partitions<'a>(
    cap: &'a Capture,
    names: &HashMap<String, String>,
    pid: u32,
    api: &str,
    side: &str,
    topic: &str,
) -> Vec<(&'a Value, &'a Value)> {
    let mut out = Vec::new();
    for r in cap.of("kafka", pid).into_iter().filter(|r| r["request"]["api"] == api) {
        for t in r[side]["topics"].as_array().into_iter().flatten() {
            let name = t["name"]
                .as_str()
                .or_else(|| t["topic_id"].as_str().and_then(|id| names.get(id)).map(String::as_str));
            if name == Some(topic) {
                out.extend(t["partitions"].as_array().unwrap().iter().map(|p| (r, p)));
            }
        }
    }
    out
}

/// `{key, value, headers}` of the records of these partitions, in order.
fn records_of(parts: &[(&Value, &Value)]) -> Vec<Value> {
    parts
        .iter()
        .flat_map(|(_, p)| p["records"].as_array().cloned().unwrap_or_default())
        .map(|r| json!({"key": r["key"], "value": r["value"], "headers": r["headers"]}))
        .collect()
}

/// Checks the produce and fetch records of `topic` at the client `pid` and
/// at the broker: exact records once each, compression, roles, endpoints.
fn check_topic(
    cap: &Capture,
    names: &HashMap<String, String>,
    broker: &KafkaBroker,
    pid: u32,
    topic: &str,
    codec: &str,
    want: &[Value],
) {
    let server = format!("127.0.0.1:{}", broker.port);
    for (end_pid, role, end, what) in
        [(pid, "client", "remote", "client"), (broker.pid(), "server", "local", "broker")]
    {
        let produced = partitions(cap, names, end_pid, "Produce", "request", topic);
        assert!(!produced.is_empty(), "no Produce of {topic} at the {what}");
        assert_eq!(records_of(&produced), want, "{topic}: records produced, at the {what}");
        for (r, p) in &produced {
            assert_eq!(
                (r["conn"]["role"].as_str(), r["conn"][end].as_str()),
                (Some(role), Some(server.as_str())),
                "{r}"
            );
            assert_eq!(p["compression"], json!([codec]), "{topic} at the {what}: {p}");
            assert_eq!(r["response"]["error_code"], 0, "{r}");
            assert!(r["latency_ns"].as_u64().is_some(), "{r}");
        }
        let fetched = partitions(cap, names, end_pid, "Fetch", "response", topic);
        let seen: Vec<_> = fetched.iter().map(|(r, _)| &r["response"]).collect();
        if what == "broker" {
            // The broker sends stored batches with sendfile: their bytes
            // never pass through its memory, so its side says so (the
            // response itself is paired and read).
            let sent: Vec<_> =
                fetched.iter().filter(|(_, p)| p["records_bytes"].as_u64() > Some(0)).collect();
            assert!(!sent.is_empty(), "{topic}: no fetch response with records at the broker: {seen:#?}");
            for (_, p) in sent {
                assert_eq!(p["undecoded_reason"], "bytes not captured", "{p}");
            }
            continue;
        }
        assert_eq!(records_of(&fetched), want, "{topic}: records fetched, at the {what}, in {seen:#?}");
        let offsets: Vec<_> = fetched
            .iter()
            .flat_map(|(_, p)| p["records"].as_array().cloned().unwrap_or_default())
            .map(|r| r["offset"].clone())
            .collect();
        assert_eq!(offsets, (0..want.len()).map(|i| json!(i)).collect::<Vec<_>>(), "{topic}");
    }
    // Each client-side Produce has its twin at the broker: same correlation
    // id, the client's local address as the broker's remote.
    for (r, _) in partitions(cap, names, pid, "Produce", "request", topic) {
        let twin =
            partitions(cap, names, broker.pid(), "Produce", "request", topic).into_iter().find(|(b, _)| {
                b["conn"]["remote"] == r["conn"]["local"]
                    && b["request"]["correlation_id"] == r["request"]["correlation_id"]
            });
        assert!(twin.is_some(), "no broker-side twin of {r}");
    }
}

#[test]
fn java_and_python_clients_produce_and_consume_compressed_batches() {
    let port = free_port();
    let broker = KafkaBroker::start(port, free_port());
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let bootstrap = format!("127.0.0.1:{port}");

    let java_out = broker.dir.path().join("java.json");
    let mut java = kafka_peer(&[
        &bootstrap,
        "orders",
        &CODECS.join(","),
        &COUNT.to_string(),
        java_out.to_str().unwrap(),
    ])
    .spawn_guarded();
    assert!(wait_child(&mut java, "KafkaPeer").success(), "KafkaPeer failed; broker log:\n{}", broker.log());
    let py_out = broker.dir.path().join("py.json");
    let mut py = std::process::Command::new(venv_python())
        .arg(program("kafka_peer.py"))
        .args([&port_s, "pyorders", &COUNT.to_string()])
        .arg(&py_out)
        .spawn_guarded();
    assert!(wait_child(&mut py, "kafka_peer.py").success(), "kafka_peer.py failed");
    let cap = sensor.stop();

    let java: Value = serde_json::from_str(&std::fs::read_to_string(&java_out).unwrap()).unwrap();
    let py: Value = serde_json::from_str(&std::fs::read_to_string(&py_out).unwrap()).unwrap();
    let names = topic_names(&cap);
    let java_pid = java["pid"].as_u64().unwrap() as u32;
    for (codec, t) in CODECS.iter().zip(java["topics"].as_array().unwrap()) {
        let topic = t["name"].as_str().unwrap();
        assert_eq!(t["consumed"].as_array().unwrap().len(), COUNT, "the Java consumer read {t}");
        // The broker's id for the topic is the one the records name.
        let id = t["topic_id"].as_str().unwrap();
        assert_eq!(names.get(id).map(String::as_str), Some(topic), "{names:?}");
        check_topic(&cap, &names, &broker, java_pid, topic, codec, &java_records());
    }
    // Produce v13 and Fetch v18 name topics by id: the names come from the
    // Metadata answers of the clients' other connections.
    for r in cap
        .of("kafka", java_pid)
        .into_iter()
        .filter(|r| matches!(r["request"]["api"].as_str(), Some("Produce" | "Fetch")))
    {
        for t in r["request"]["topics"].as_array().unwrap() {
            assert!(t["name"].as_str().is_some_and(|n| n.starts_with("orders-")), "{r}");
        }
    }
    let java_client_ids: Vec<_> =
        cap.of("kafka", java_pid).iter().map(|r| r["request"]["client_id"].clone()).collect();
    assert!(
        java_client_ids.contains(&json!("nettap-producer"))
            && java_client_ids.contains(&json!("nettap-consumer"))
    );
    // An idempotent producer's batches carry its producer id.
    let pids: Vec<_> = partitions(&cap, &names, java_pid, "Produce", "request", "orders-gzip")
        .iter()
        .map(|(_, p)| p["producer_id"].as_i64().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| p >= 0), "{pids:?}");

    let py_pid = py["pid"].as_u64().unwrap() as u32;
    assert_eq!(py["consumed"].as_array().unwrap().len(), COUNT);
    check_topic(&cap, &names, &broker, py_pid, "pyorders", "gzip", &python_records());

    // The garbage connection: its ApiVersions exchange, then a counted drop
    // and the rest as raw data.
    let local = py["garbage"]["local"].as_str().unwrap();
    let hello: Vec<_> = cap.of("kafka", py_pid).into_iter().filter(|r| r["conn"]["local"] == local).collect();
    assert_eq!(hello.len(), 1, "{hello:?}");
    assert_eq!(
        (hello[0]["request"]["api"].as_str(), hello[0]["request"]["client_id"].as_str()),
        (Some("ApiVersions"), Some("garbage"))
    );
    assert_eq!(hello[0]["response"]["error_code"], 0);
    assert!(cap.dropped("kafka_parse_error").0 >= 1, "no kafka_parse_error drop");
    let raw = cap
        .of("data", py_pid)
        .into_iter()
        .filter(|r| r["conn"]["local"] == local)
        .map(|r| r["payload"].as_str().unwrap_or_default().to_string())
        .collect::<String>();
    assert!(raw.contains("this is not kafka"), "{raw:?}");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn a_producer_joined_mid_stream_is_parsed_from_its_next_request() {
    let port = free_port();
    let broker = KafkaBroker::start(port, free_port());
    let d = broker.dir.path().to_path_buf();
    let port_s = port.to_string();
    let (cap, peer) = capture_held("kafka_hold.py", &[&port_s, "held"], &d, port);
    let pid = peer["pid"].as_u64().unwrap() as u32;
    let names = topic_names(&cap);
    // The producer's connections (it opened them all before the sensor started).
    let locals: Vec<&str> = cap.of("kafka", pid).iter().filter_map(|r| r["conn"]["local"].as_str()).collect();
    assert!(!locals.is_empty(), "no kafka record of the producer");
    // Records 1 and 2 (sent after the join), each once, at both ends; record 0 went before.
    let want: Vec<Value> = (1..3)
        .map(|i| json!({"key": format!("key-{i}"), "value": format!("value-{i}"), "headers": []}))
        .collect();
    for (who, p, end) in [("client", pid, "local"), ("broker", broker.pid(), "remote")] {
        let produced: Vec<_> = partitions(&cap, &names, p, "Produce", "request", "held")
            .into_iter()
            .filter(|(r, _)| locals.contains(&r["conn"][end].as_str().unwrap_or_default()))
            .collect();
        assert_eq!(records_of(&produced), want, "at the {who}");
        for (r, _) in &produced {
            assert_eq!(r["response"]["error_code"], 0, "{r}");
            let conn = cap
                .of("conn", p)
                .into_iter()
                .find(|c| c["conn"][end] == r["conn"][end])
                .expect("a conn record");
            assert_eq!(conn["event"], "midstream", "at the {who}: {conn}");
        }
    }
    assert_eq!(cap.dropped("kafka_parse_error"), (0, 0));
}

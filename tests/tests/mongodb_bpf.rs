//! MongoDB (issue 23): FerretDB (a real MongoDB wire-protocol server, Go,
//! on SQLite; ci/ferretdb) and pymongo, a real driver with its real
//! handshake and PLAIN
//! authentication. insert/find/update/delete/aggregate, an error and a
//! 5 MiB document; the same compressed with zlib, zstd and snappy, which
//! the driver negotiates with a relay that adds the server's half of
//! OP_COMPRESSED (FerretDB 1.x has none: tests/programs/mongo_zproxy.py);
//! and a legacy OP_QUERY isMaster (answered by OP_REPLY) followed by bytes
//! that stop being MongoDB's. Every command appears exactly once
//! at each end with the exact documents the driver's own command
//! monitoring saw both ways, the right pid, addresses and role; the
//! password appears nowhere. Exported over OTLP, each is a database span.

use base64::Engine;
use nettap_e2e::*;
use serde_json::{json, Value};
use std::process::Command;

const PASSWORD: &str = "pw-s3cret-for-mongo";

/// Commands whose documents drivers and nettap keep to themselves.
const AUTH: &[&str] = &["saslStart", "saslContinue"];

/// The one record of `pid` for request `id` on a connection whose `end` is `addr`.
fn one<'a>(cap: &'a Capture, pid: u32, id: &Value, end: &str, addr: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = cap
        .of("mongodb", pid)
        .into_iter()
        .filter(|r| r["request"]["request_id"] == *id && addr.is_none_or(|a| r["conn"][end] == a))
        .collect();
    assert_eq!(found.len(), 1, "request {id} at pid {pid}: {found:?}");
    found[0]
}

#[test]
fn pymongo_and_ferretdb_exchanges_at_both_ends_compressed_and_not() {
    let (port, zport) = (free_port(), free_port());
    let db = FerretDb::start(port, zport);
    let mut args = vec!["--port".to_string(), port.to_string(), "--port".into(), zport.to_string()];
    args.extend(EXACT.iter().map(|s| s.to_string()));
    let sensor = Sensor::start(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let out = db.dir.path().join("peer.json");
    let status = Command::new(venv_python())
        .arg(program("mongo_peer.py"))
        .args([&port.to_string(), &zport.to_string(), PASSWORD])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "mongo_peer.py failed");
    let cap = sensor.stop();

    let peer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let py = peer["pid"].as_u64().unwrap() as u32;
    let mut seen = std::collections::HashSet::new();
    for (client, events) in peer["events"].as_object().unwrap() {
        let compressor = (client != "plain").then_some(client.as_str());
        let (server_pid, server_port) =
            if compressor.is_some() { (db.relay_pid(), zport) } else { (db.pid(), port) };
        let names: Vec<&str> =
            events.as_array().unwrap().iter().map(|e| e["command_name"].as_str().unwrap()).collect();
        let want: &[&str] =
            &["insert", "find", "update", "aggregate", "delete", "nosuchcommand", "drop", "endSessions"];
        let mut want = want.to_vec();
        if compressor.is_none() {
            want.insert(0, "saslStart");
            want.insert(7, "insert"); // the 5 MiB document
        }
        assert_eq!(names, want, "{client}: the driver's commands");
        let mut locals = std::collections::HashSet::new();
        for ev in events.as_array().unwrap() {
            let id = &ev["request_id"];
            seen.insert(id.as_i64().unwrap());
            let c = one(&cap, py, id, "remote", Some(&format!("127.0.0.1:{server_port}")));
            let local = c["conn"]["local"].as_str().unwrap();
            locals.insert(local.to_string());
            let s = one(&cap, server_pid, id, "remote", Some(local));
            for (who, r, role) in [("client", c, "client"), ("server", s, "server")] {
                let what = format!("{client} {} at the {who}", ev["command_name"]);
                assert_eq!(
                    (r["conn"]["role"].as_str(), r["source"].as_str()),
                    (Some(role), Some("kernel")),
                    "{what}"
                );
                assert_eq!(s["conn"]["local"], format!("127.0.0.1:{server_port}"), "{what}");
                assert!(r["latency_ns"].as_u64().is_some_and(|l| l > 0), "{what}: {r}");
                let q = &r["request"];
                assert_eq!(
                    (&q["command"], &q["database"], &q["op"]),
                    (&ev["command_name"], &ev["database"], &json!("OP_MSG")),
                    "{what}"
                );
                assert_eq!(
                    q["compressor"].as_str(),
                    compressor.filter(|_| !AUTH.contains(&ev["command_name"].as_str().unwrap())),
                    "{what}"
                );
                assert_eq!(r["response"]["compressor"], q["compressor"], "{what}");
                if ["insert", "find", "update", "delete", "aggregate", "drop"]
                    .contains(&ev["command_name"].as_str().unwrap())
                {
                    assert_eq!(q["collection"], "people", "{what}");
                }
                if ev["command"] == "BIG" {
                    // Over the bound (4 MiB): the head is kept, the rest counted.
                    assert_eq!(q["undecoded"], "message over the bound", "{what}");
                    assert_eq!(q["document"]["insert"], "people", "{what}");
                    assert_eq!(r["response"]["document"], ev["reply"], "{what}");
                } else if AUTH.contains(&ev["command_name"].as_str().unwrap()) {
                    assert_eq!(q["document"]["payload"], json!({"$omitted": "auth"}), "{what}");
                    assert_eq!(q["document"]["mechanism"], "PLAIN", "{what}");
                    assert_eq!(r["response"]["ok"], 1.0, "{what}");
                } else {
                    assert_eq!(q["document"], ev["command"], "{what}: the command as the driver sent it");
                    assert_eq!(
                        r["response"]["document"], ev["reply"],
                        "{what}: the reply as the driver read it"
                    );
                    assert_eq!(r["response"]["ok"], ev["reply"]["ok"], "{what}");
                }
            }
        }
        // The handshake of the connection the commands went on (OP_MSG from
        // pymongo 4 on) asks for the compressor, and the relay offers it.
        let handshakes: Vec<&Value> = cap
            .of("mongodb", py)
            .into_iter()
            .filter(|r| r["request"]["command"] == "ismaster")
            .filter(|r| locals.contains(r["conn"]["local"].as_str().unwrap()))
            .collect();
        let [h] = &handshakes[..] else { panic!("{client}: one handshake per connection: {handshakes:?}") };
        assert_eq!((&h["request"]["database"], &h["response"]["ok"]), (&json!("admin"), &json!(1.0)), "{h}");
        assert_eq!(h["response"]["document"]["maxWireVersion"], 21, "{h}");
        let offered = compressor.map_or(Value::Null, |c| json!([c]));
        assert_eq!(h["response"]["document"]["compression"], offered, "{h}");
        let asked = if compressor.is_some() { offered } else { json!([]) };
        assert_eq!(h["request"]["document"]["compression"], asked, "{h}");
    }
    // Everything else the driver sent is its handshakes and its monitors' hellos.
    for r in cap.of("mongodb", py) {
        let id = r["request"]["request_id"].as_i64().unwrap();
        let cmd = r["request"]["command"].as_str().unwrap_or("");
        assert!(
            seen.contains(&id) || ["ismaster", "hello", "isMaster"].contains(&cmd),
            "an unexpected record: {r}"
        );
    }

    // The 5 MiB document: counted at each end, beyond the 4 MiB kept.
    let (n, bytes) = cap.dropped("mongodb_message_over_limit");
    assert_eq!(n, 2, "one per end");
    assert!(bytes > 2 * (1 << 20), "{bytes}");
    // The legacy handshake is paired at both ends, then the garbage is a
    // counted drop at each.
    let g = &peer["garbage"];
    for (pid, end, addr) in [(py, "local", &g["local"]), (db.pid(), "remote", &g["local"])] {
        let r = one(&cap, pid, &json!(77), end, addr.as_str());
        let q = &r["request"];
        assert_eq!(
            (&q["op"], &q["command"], &q["database"]),
            (&json!("OP_QUERY"), &json!("isMaster"), &json!("admin")),
            "{r}"
        );
        assert_eq!(
            (&r["response"]["op"], &r["response"]["document"]["ismaster"]),
            (&json!("OP_REPLY"), &json!(true)),
            "{r}"
        );
    }
    assert_eq!(cap.dropped("mongodb_parse_error").0, 2, "one per end");
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    let plain_payload = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{PASSWORD}"));
    assert!(!all.contains(PASSWORD) && !all.contains(&plain_payload), "a password was written");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn a_connection_joined_mid_stream_is_parsed_from_its_next_request() {
    let (port, zport) = (free_port(), free_port());
    let db = FerretDb::start(port, zport);
    let d = db.dir.path().to_path_buf();
    let mut client = Command::new(venv_python())
        .arg(program("mongo_hold.py"))
        .arg(port.to_string())
        .arg(&d)
        .spawn_guarded();
    let cap = capture_held(&mut client, "mongo_hold.py", &d, port);
    let peer: Value = serde_json::from_str(&std::fs::read_to_string(d.join("peer.json")).unwrap()).unwrap();
    let (pid, local) = (peer["pid"].as_u64().unwrap() as u32, peer["local"].as_str().unwrap());
    // find, count's aggregate and endSessions at close, exactly as the driver saw them.
    let want: Vec<Value> =
        peer["after"].as_array().unwrap().iter().map(|e| json!([e["command"], e["reply"]])).collect();
    assert_eq!(want.len(), 3, "{want:?}");
    assert_eq!(
        (&want[0][0]["find"], &want[1][0]["aggregate"]),
        (&json!("people"), &json!("people")),
        "{want:?}"
    );
    for (who, p, end) in [("client", pid, "local"), ("server", db.pid(), "remote")] {
        let got: Vec<Value> = cap
            .of("mongodb", p)
            .into_iter()
            .filter(|r| r["conn"][end] == local)
            .map(|r| json!([r["request"]["document"], r["response"]["document"]]))
            .collect();
        assert_eq!(got, want, "at the {who}");
        let conn = cap.of("conn", p).into_iter().find(|r| r["conn"][end] == local).expect("a conn record");
        assert_eq!(conn["event"], "midstream", "at the {who}");
    }
}

#[test]
fn mongodb_exchanges_export_as_database_spans_over_otlp() {
    let collector = Collector::start();
    let (port, zport) = (free_port(), free_port());
    let db = FerretDb::start(port, zport);
    let endpoint = collector.endpoint("grpc");
    let sensor = Sensor::start(&[
        "--port",
        &port.to_string(),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
    ]);
    // mongo_hold.py without the hold: insert, whatsmyuri, find, count, endSessions.
    let d = db.dir.path();
    std::fs::write(d.join("go"), b"").unwrap();
    let mut client = Command::new(venv_python())
        .arg(program("mongo_hold.py"))
        .arg(port.to_string())
        .arg(d)
        .spawn_guarded();
    assert!(wait_child(&mut client, "mongo_hold.py").success());
    let cap = sensor.stop();

    let lines: Vec<&str> = cap.text.lines().filter(|l| l.starts_with(r#"{"kind":"mongodb""#)).collect();
    assert!(lines.len() >= 10, "both ends of five commands and the handshakes: {lines:#?}");
    collector.wait_for(lines.len(), lines.len());
    let spans = collector.spans();
    let logs = collector.logs();
    let mut errors = 0;
    for line in &lines {
        let r: Value = serde_json::from_str(line).unwrap();
        let (log, _) =
            logs.iter().find(|(l, _)| l["body"]["stringValue"] == *line).expect("a log record per record");
        let span = spans.iter().find(|s| s.span["spanId"] == log["spanId"]).expect("the log's span");
        let (a, q) = (&span.attrs, &r["request"]);
        assert_eq!((&a["db.system"], &a["db.system.name"]), (&json!("mongodb"), &json!("mongodb")), "{line}");
        assert_eq!((&a["db.operation.name"], &a["db.namespace"]), (&q["command"], &q["database"]), "{line}");
        assert_eq!(a.get("db.collection.name").unwrap_or(&Value::Null), &q["collection"], "{line}");
        let name = match q["collection"].as_str() {
            Some(c) => format!("{} {c}", q["command"].as_str().unwrap()),
            None => q["command"].as_str().unwrap().to_string(),
        };
        assert_eq!(span.span["name"], name, "{line}");
        assert_eq!(span.span["kind"], if r["conn"]["role"] == "server" { 2 } else { 3 }, "{line}");
        assert_eq!(a["server.port"], port, "{line}");
        // FerretDB has no endSessions: ok 0, code 59 (CommandNotFound).
        let failed = r["response"]["ok"] == 0.0;
        assert_eq!(span.span["status"]["code"] == 2, failed, "{line}: {:?}", span.span);
        if failed {
            errors += 1;
            assert_eq!(
                (&a["db.response.status_code"], &span.span["status"]["message"]),
                (&json!("59"), &json!("CommandNotFound"))
            );
        }
    }
    assert_eq!(errors, 2, "endSessions at both ends");
}

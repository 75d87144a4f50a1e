//! MongoDB (issue 23): FerretDB (a real MongoDB wire-protocol server, Go,
//! on SQLite; ci/ferretdb) with two real drivers and their real handshakes:
//! pymongo (OP_MSG from the first message) and the Node.js driver (the
//! legacy OP_QUERY isMaster answered by OP_REPLY, an unacknowledged
//! endSessions with moreToCome), both with PLAIN authentication, then
//! insert/find/update/delete/aggregate, an error (and pymongo a 5 MiB
//! document); the same compressed (pymongo: zlib, zstd, snappy; Node.js:
//! zlib), negotiated with a relay that adds the server's half of
//! OP_COMPRESSED (FerretDB 1.x has none: tests/programs/mongo_zproxy.py);
//! a legacy isMaster followed by bytes that stop being MongoDB's; a
//! connection joined mid-stream; pymongo over TLS (plaintext from OpenSSL
//! at the client, from Go's crypto/tls in FerretDB). Every command appears exactly once at each
//! end with the exact documents the driver's own command monitoring saw
//! both ways, the right pid, addresses and role; the password appears
//! nowhere. Exported over OTLP, each is a database span.

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

/// What every driver's script asks (after its auth, and the 5 MiB insert of pymongo's).
const COMMANDS: &[&str] =
    &["insert", "find", "update", "aggregate", "delete", "nosuchcommand", "drop", "endSessions"];

/// `v` with every number a double: JavaScript has no other, so the Node.js
/// driver's events say `1` for the `1.0` on the wire.
fn doubles(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(doubles).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), doubles(v))).collect()),
        other => other.clone(),
    }
}

/// Checks the records of one driver client (`plain`: straight to FerretDB
/// with PLAIN auth; else the compressor it used through the relay) against
/// the `events` its command monitoring saw: each command exactly once at
/// the driver's `pid` and at the server's end of the same connection, with
/// roles, addresses, source, database, collection, compressor, and the
/// exact documents both ways (numbers compared as doubles for `js`). The
/// handshake of that connection (one) is checked and returned.
fn check_driver<'a>(
    cap: &'a Capture,
    db: &FerretDb,
    (port, zport): (u16, u16),
    pid: u32,
    client: &str,
    events: &Value,
    js: bool,
) -> &'a Value {
    let compressor = (client != "plain").then_some(client);
    let (server_pid, server_port) =
        if compressor.is_some() { (db.relay_pid(), zport) } else { (db.pid(), port) };
    let same = |a: &Value, b: &Value| if js { doubles(a) == doubles(b) } else { a == b };
    let mut locals = std::collections::HashSet::new();
    for ev in events.as_array().unwrap() {
        let id = &ev["request_id"];
        let c = one(cap, pid, id, "remote", Some(&format!("127.0.0.1:{server_port}")));
        let local = c["conn"]["local"].as_str().unwrap();
        locals.insert(local.to_string());
        let s = one(cap, server_pid, id, "remote", Some(local));
        for (who, r, role) in [("client", c, "client"), ("server", s, "server")] {
            let what = format!("{client} {} at the {who}", ev["command_name"]);
            assert_eq!(
                (r["conn"]["role"].as_str(), r["source"].as_str()),
                (Some(role), Some("kernel")),
                "{what}"
            );
            assert_eq!(s["conn"]["local"], format!("127.0.0.1:{server_port}"), "{what}");
            let q = &r["request"];
            if q["flags"] == json!(["more_to_come"]) {
                // Unacknowledged (the Node.js driver's endSessions, w: 0): no
                // reply comes; the driver's event has one it made up.
                assert_eq!((&r["response"], &r["latency_ns"]), (&Value::Null, &Value::Null), "{what}");
                assert!(same(&ev["reply"], &json!({"ok": 1})), "{what}: {}", ev["reply"]);
                assert!(
                    same(&q["document"], &ev["command"]),
                    "{what}: {} vs {}",
                    q["document"],
                    ev["command"]
                );
                continue;
            }
            assert!(r["latency_ns"].as_u64().is_some_and(|l| l > 0), "{what}: {r}");
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
                assert!(same(&r["response"]["document"], &ev["reply"]), "{what}");
            } else if AUTH.contains(&ev["command_name"].as_str().unwrap()) {
                assert_eq!(q["document"]["payload"], json!({"$omitted": "auth"}), "{what}");
                assert_eq!(q["document"]["mechanism"], "PLAIN", "{what}");
                assert_eq!(r["response"]["ok"], 1.0, "{what}");
            } else {
                let (doc, reply) = (&q["document"], &r["response"]["document"]);
                assert!(
                    same(doc, &ev["command"]),
                    "{what}: the command as the driver sent it: {doc} vs {}",
                    ev["command"]
                );
                assert!(
                    same(reply, &ev["reply"]),
                    "{what}: the reply as the driver read it: {reply} vs {}",
                    ev["reply"]
                );
                assert!(same(&r["response"]["ok"], &ev["reply"]["ok"]), "{what}");
            }
        }
    }
    // The handshake of the connection the commands went on asks for the
    // compressor, and the relay offers it.
    let handshakes: Vec<&Value> = cap
        .of("mongodb", pid)
        .into_iter()
        .filter(|r| {
            ["ismaster", "hello", "isMaster"].contains(&r["request"]["command"].as_str().unwrap_or(""))
        })
        .filter(|r| locals.contains(r["conn"]["local"].as_str().unwrap()))
        .collect();
    let [h] = &handshakes[..] else { panic!("{client}: one handshake per connection: {handshakes:?}") };
    assert_eq!((&h["request"]["database"], &h["response"]["ok"]), (&json!("admin"), &json!(1.0)), "{h}");
    assert_eq!(h["response"]["document"]["maxWireVersion"], 21, "{h}");
    let offered = compressor.map_or(Value::Null, |c| json!([c]));
    assert_eq!(h["response"]["document"]["compression"], offered, "{h}");
    if compressor.is_some() {
        assert_eq!(h["request"]["document"]["compression"], offered, "{h}");
    }
    h
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
        let names: Vec<&str> =
            events.as_array().unwrap().iter().map(|e| e["command_name"].as_str().unwrap()).collect();
        let mut want = COMMANDS.to_vec();
        if client == "plain" {
            want.insert(0, "saslStart");
            want.insert(7, "insert"); // the 5 MiB document
        }
        assert_eq!(names, want, "{client}: the driver's commands");
        let handshake = check_driver(&cap, &db, (port, zport), py, client, events, false);
        // pymongo 4 opens with OP_MSG, and says `compression: []` when it wants none.
        assert_eq!(handshake["request"]["op"], "OP_MSG", "{handshake}");
        if client == "plain" {
            assert_eq!(handshake["request"]["document"]["compression"], json!([]), "{handshake}");
        }
        seen.extend(events.as_array().unwrap().iter().map(|e| e["request_id"].as_i64().unwrap()));
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
fn the_node_driver_and_ferretdb_exchanges_at_both_ends_compressed_and_not() {
    let (port, zport) = (free_port(), free_port());
    let db = FerretDb::start(port, zport);
    let (port_s, zport_s) = (port.to_string(), zport.to_string());
    let mut args = vec!["--port", &port_s, "--port", &zport_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let out = db.dir.path().join("node.json");
    let mut node =
        node_mongodb("mongo_peer.js").args([&port_s, &zport_s, PASSWORD]).arg(&out).spawn_guarded();
    assert!(wait_child(&mut node, "mongo_peer.js").success(), "mongo_peer.js failed");
    let cap = sensor.stop();

    let peer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let pid = peer["pid"].as_u64().unwrap() as u32;
    for (client, events) in peer["events"].as_object().unwrap() {
        let names: Vec<&str> =
            events.as_array().unwrap().iter().map(|e| e["command_name"].as_str().unwrap()).collect();
        assert_eq!(names, COMMANDS, "{client}: the driver's commands");
        let h = check_driver(&cap, &db, (port, zport), pid, client, events, true);
        // The Node.js driver opens with the legacy handshake: OP_QUERY, answered by OP_REPLY.
        assert_eq!(
            (&h["request"]["op"], &h["response"]["op"]),
            (&json!("OP_QUERY"), &json!("OP_REPLY")),
            "{h}"
        );
    }
    // PLAIN's payload (the password in clear) went in saslStart, never into a record.
    let sasl: Vec<&Value> =
        cap.of("mongodb", pid).into_iter().filter(|r| r["request"]["command"] == "saslStart").collect();
    assert_eq!(sasl.len(), 1, "{sasl:?}");
    assert_eq!(sasl[0]["request"]["document"]["payload"], json!({"$omitted": "auth"}));
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "a password was written");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn a_connection_joined_mid_stream_is_parsed_from_its_next_request() {
    let (port, zport) = (free_port(), free_port());
    let db = FerretDb::start(port, zport);
    let d = db.dir.path().to_path_buf();
    let (cap, peer) = capture_held("mongo_hold.py", &[&port.to_string()], &d, port);
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

#[test]
fn pymongo_over_tls_is_captured_as_plaintext_from_openssl_and_go() {
    let port = free_port();
    let db = FerretDb::start_tls(port);
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    // mongo_hold.py without the hold, over TLS.
    let d = db.dir.path();
    std::fs::write(d.join("go"), b"").unwrap();
    let mut client = Command::new(venv_python())
        .arg(program("mongo_hold.py"))
        .arg(&port_s)
        .arg(d)
        .arg(d.join("cert.pem"))
        .spawn_guarded();
    assert!(wait_child(&mut client, "mongo_hold.py").success());
    let cap = sensor.stop();
    let peer: Value = serde_json::from_str(&std::fs::read_to_string(d.join("peer.json")).unwrap()).unwrap();
    let (pid, local) = (peer["pid"].as_u64().unwrap() as u32, peer["local"].as_str().unwrap());
    let want: Vec<Value> =
        peer["after"].as_array().unwrap().iter().map(|e| json!([e["command"], e["reply"]])).collect();
    assert_eq!(want.len(), 3, "find, count's aggregate, endSessions: {want:?}");
    // Python's ssl module is OpenSSL; FerretDB's TLS is Go's crypto/tls.
    for (who, p, end, source) in
        [("client", pid, "local", "openssl"), ("server", db.pid(), "remote", "go-tls")]
    {
        let records: Vec<&Value> =
            cap.of("mongodb", p).into_iter().filter(|r| r["conn"][end] == local).collect();
        for r in &records {
            assert_eq!(
                (r["source"].as_str(), r["conn"]["tls"].as_bool()),
                (Some(source), Some(true)),
                "{who}: {r}"
            );
        }
        let commands: Vec<&Value> = records.iter().map(|r| &r["request"]["command"]).collect();
        assert_eq!(
            commands[..3],
            [&json!("ismaster"), &json!("insert"), &json!("whatsmyuri")],
            "at the {who}"
        );
        let got: Vec<Value> = records[3..]
            .iter()
            .map(|r| json!([r["request"]["document"], r["response"]["document"]]))
            .collect();
        assert_eq!(got, want, "at the {who}");
    }
}

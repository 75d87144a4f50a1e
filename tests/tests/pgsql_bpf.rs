//! PostgreSQL (issue 23): Debian's server (initdb'd by the test, run as
//! nobody on loopback) with psql (simple protocol) and psycopg 3 (extended
//! protocol with text, integer and bytea parameters, a prepared statement,
//! a transaction, an error, 10 000 rows). Every request appears exactly once
//! at each end with its exact answer, pid, addresses and role; the password
//! appears nowhere.

use nettap_e2e::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const PASSWORD: &str = "pg-s3cret-password";

fn ok(tag: Option<&str>, columns: &[&str], rows: Value) -> Value {
    json!({"status": "ok", "command_tag": tag, "columns": columns, "rows": rows, "rows_truncated": 0})
}

fn ex(kind: &str, query: &str, params: Value, response: Value) -> Value {
    json!({"request": {"type": kind, "query": query, "params": params}, "response": response})
}

/// The opening every client makes here: SSLRequest (refused: no TLS on this
/// server) and the startup.
fn opening() -> Vec<Value> {
    opening_answered("N")
}

/// SSLRequest answered `answer` (`S`: TLS follows), and the startup.
fn opening_answered(answer: &str) -> Vec<Value> {
    let mut ssl = ok(None, &[], json!([]));
    ssl["ssl"] = json!(answer);
    vec![ex("ssl_request", "", json!([]), ssl), ex("startup", "", json!([]), ok(None, &[], json!([])))]
}

/// pg_peer.py's exchanges, opened with `opening`.
fn psycopg(port: u64, backend: u64, opening: Vec<Value>) -> Vec<Value> {
    let insert = "INSERT INTO items VALUES ($1, $2, NULL)";
    let prepared = |params: Value| {
        let mut e = ex("execute", insert, params, ok(Some("INSERT 0 1"), &[], json!([])));
        e["request"]["statement"] = json!("_pg3_0");
        e
    };
    let mut prepare = ex("prepare", insert, json!([]), ok(None, &[], json!([])));
    prepare["request"]["statement"] = json!("_pg3_0");
    let series: Vec<Value> = (1..=1000).map(|n| json!([n.to_string()])).collect();
    let mut ten_thousand = ok(Some("SELECT 10000"), &["g"], json!(series));
    ten_thousand["rows_truncated"] = json!(9000);
    let mut v = opening;
    v.extend([
        ex(
            "query",
            "SELECT inet_client_port(), pg_backend_pid()",
            json!([]),
            ok(Some("SELECT 1"), &["inet_client_port", "pg_backend_pid"], json!([[port.to_string(), backend.to_string()]])),
        ),
        ex(
            "query",
            "CREATE TABLE items (id int PRIMARY KEY, name text, data bytea)",
            json!([]),
            ok(Some("CREATE TABLE"), &[], json!([])),
        ),
        ex(
            "execute",
            "INSERT INTO items VALUES ($1, $2, $3)",
            json!([1, "one", {"b64": "AAH/"}]),
            ok(Some("INSERT 0 1"), &[], json!([])),
        ),
        ex(
            "execute",
            "SELECT id, name, data FROM items WHERE id = $1",
            json!([1]),
            ok(Some("SELECT 1"), &["id", "name", "data"], json!([["1", "one", "\\x0001ff"]])),
        ),
        prepare,
        prepared(json!([2, "n2"])),
        prepared(json!([3, "n3"])),
        ex("query", "BEGIN", json!([]), ok(Some("BEGIN"), &[], json!([]))),
        ex("execute", "UPDATE items SET name = $1 WHERE id = $2", json!(["uno", 1]), ok(Some("UPDATE 1"), &[], json!([]))),
        ex("query", "COMMIT", json!([]), ok(Some("COMMIT"), &[], json!([]))),
        ex(
            "query",
            "SELECT * FROM nope",
            json!([]),
            json!({"status": "error", "command_tag": null, "columns": [], "rows": [], "rows_truncated": 0,
                   "error": {"severity": "ERROR", "code": "42P01", "message": "relation \"nope\" does not exist"}}),
        ),
        ex("query", "SELECT g FROM generate_series(1, 10000) g", json!([]), ten_thousand),
    ]);
    v
}

/// The pgsql records of `pid` on the connection whose `end` is `addr`, as
/// `{request, response}`, after checking their role, user and database.
fn exchanges(cap: &Capture, pid: u32, end: &str, addr: &str, role: &str) -> Vec<Value> {
    cap.of("pgsql", pid)
        .into_iter()
        .filter(|r| r["conn"][end] == addr)
        .map(|r| {
            assert_eq!(r["conn"]["role"], role, "{r}");
            if r["request"]["type"] != "ssl_request" {
                assert_eq!(
                    (r["user"].as_str(), r["database"].as_str()),
                    (Some("postgres"), Some("postgres")),
                    "{r}"
                );
            }
            assert!(r["latency_ns"].as_u64().is_some(), "{r}");
            json!({"request": r["request"], "response": r["response"]})
        })
        .collect()
}

/// Runs pg_peer.py (psycopg, libpq's `sslmode`) against `server` on
/// `port`: what it wrote.
fn pg_peer(server: &PgServer, port: &str, sslmode: &str) -> Value {
    let out = server.dir.path().join("peer.json");
    let status = Command::new(venv_python())
        .arg(program("pg_peer.py"))
        .args([port, PASSWORD])
        .arg(&out)
        .arg(sslmode)
        .status();
    assert!(status.unwrap().success(), "pg_peer.py (sslmode {sslmode}) failed");
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// The password appears in no record, and the ring buffer lost nothing.
fn no_password_and_no_loss(cap: &Capture) {
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "the password was written");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

fn assert_same(got: &[Value], want: &[Value], what: &str) {
    let kinds = |v: &[Value]| -> Vec<String> {
        v.iter().map(|e| format!("{} {}", e["request"]["type"], e["request"]["query"])).collect()
    };
    assert_eq!(kinds(got), kinds(want), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{what}");
    }
}

#[test]
fn psql_and_psycopg_exchanges_at_both_ends() {
    let port = free_port();
    let port_s = port.to_string();
    let server = PgServer::start(port, PASSWORD);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    let mut psql = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port_s, "-U", "postgres", "-d", "postgres", "-X", "-A", "-t"])
        .args(["-c", "SELECT 1 AS one, 'x' AS two"])
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .spawn_guarded();
    let psql_pid = psql.id();
    assert!(wait_child(&mut psql, "psql").success());
    let peer = pg_peer(&server, &port_s, "prefer");
    let cap = sensor.stop();

    // psycopg: the client's end and the backend's (forked by the postmaster
    // after accept: the records name the backend, which reads and writes).
    let (py_pid, local) = (peer["pid"].as_u64().unwrap() as u32, peer["local"].as_str().unwrap());
    let backend = peer["backend"].as_u64().unwrap();
    let want = psycopg(local.rsplit(':').next().unwrap().parse().unwrap(), backend, opening());
    assert_same(&exchanges(&cap, py_pid, "local", local, "client"), &want, "psycopg at the client");
    assert_same(&exchanges(&cap, backend as u32, "remote", local, "server"), &want, "psycopg at the server");
    for r in cap.of("pgsql", backend as u32) {
        assert_eq!(
            (r["comm"].as_str(), r["conn"]["local"].as_str()),
            (Some("postgres"), Some(&*format!("127.0.0.1:{port}")))
        );
    }

    // psql: the simple protocol.
    let psql_records = cap.of("pgsql", psql_pid);
    let psql_local =
        psql_records.first().expect("no psql records")["conn"]["local"].as_str().unwrap().to_string();
    let mut want = opening();
    want.push(ex(
        "query",
        "SELECT 1 AS one, 'x' AS two",
        json!([]),
        ok(Some("SELECT 1"), &["one", "two"], json!([["1", "x"]])),
    ));
    assert_same(&exchanges(&cap, psql_pid, "local", &psql_local, "client"), &want, "psql at the client");
    let psql_backend: Vec<&Value> = cap
        .records
        .iter()
        .filter(|r| r["kind"] == "pgsql" && r["conn"]["remote"] == psql_local.as_str())
        .collect();
    let psql_backend_pid =
        psql_backend.first().expect("no records at psql's backend")["pid"].as_u64().unwrap() as u32;
    assert_ne!(psql_backend_pid, server.pid(), "the postmaster does not serve queries");
    assert_same(
        &exchanges(&cap, psql_backend_pid, "remote", &psql_local, "server"),
        &want,
        "psql at the server",
    );

    // Bytes that are not the protocol: counted at each end, kept raw.
    let garbage = peer["garbage"].as_str().unwrap();
    let sent: Vec<u8> = cap
        .of("data", py_pid)
        .into_iter()
        .filter(|r| r["conn"]["local"] == garbage && r["direction"] == "send")
        .flat_map(payload)
        .collect();
    assert_eq!(sent, [0, 0, 0, 2]);
    assert_eq!(cap.dropped("pgsql_parse_error").0, 2, "one per end");
    no_password_and_no_loss(&cap);
}

#[test]
fn psql_over_tls_is_captured_as_plaintext_from_openssl() {
    let port = free_port();
    let port_s = port.to_string();
    let server = PgServer::start_with(port, PASSWORD, true);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let mut psql = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port_s, "-U", "postgres", "-d", "postgres", "-X", "-A", "-t"])
        .args(["-c", "SELECT 'secret' || 'ive' AS word"])
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "require")
        .stdout(Stdio::null())
        .spawn_guarded();
    let psql_pid = psql.id();
    assert!(wait_child(&mut psql, "psql").success());
    let cap = sensor.stop();
    drop(server);

    // The SSLRequest and its `S` are the socket's plaintext; the rest comes
    // decrypted from OpenSSL, with `tls: true`.
    let mut ssl = ok(None, &[], json!([]));
    ssl["ssl"] = json!("S");
    let want = [
        ("kernel", false, ex("ssl_request", "", json!([]), ssl)),
        ("openssl", true, ex("startup", "", json!([]), ok(None, &[], json!([])))),
        (
            "openssl",
            true,
            ex(
                "query",
                "SELECT 'secret' || 'ive' AS word",
                json!([]),
                ok(Some("SELECT 1"), &["word"], json!([["secretive"]])),
            ),
        ),
    ];
    let client = cap.of("pgsql", psql_pid);
    let local = client.first().expect("no psql records")["conn"]["local"].as_str().unwrap().to_string();
    let server_side: Vec<&Value> = cap
        .records
        .iter()
        .filter(|r| r["kind"] == "pgsql" && r["conn"]["remote"] == local.as_str())
        .collect();
    for (who, records) in [("client", client), ("server", server_side)] {
        let got: Vec<(String, bool, Value)> = records
            .iter()
            .map(|r| {
                let e = json!({"request": r["request"], "response": r["response"]});
                (r["source"].as_str().unwrap().to_string(), r["conn"]["tls"].as_bool().unwrap(), e)
            })
            .collect();
        let want: Vec<(String, bool, Value)> =
            want.iter().map(|(s, t, e)| (s.to_string(), *t, e.clone())).collect();
        assert_eq!(got, want, "psql over TLS at the {who}");
    }
    no_password_and_no_loss(&cap);
}

/// The pgsql records of `pid` on the connection whose `end` is `addr`, as
/// (source, tls, exchange), after checking role, user and database.
fn sourced(cap: &Capture, pid: u32, end: &str, addr: &str, role: &str) -> Vec<(String, bool, Value)> {
    let records: Vec<&Value> = cap
        .records
        .iter()
        .filter(|r| r["kind"] == "pgsql" && r["pid"] == pid && r["conn"][end] == addr)
        .collect();
    let exchanges = exchanges(cap, pid, end, addr, role);
    records
        .iter()
        .zip(exchanges)
        .map(|(r, e)| (r["source"].as_str().unwrap().to_string(), r["conn"]["tls"].as_bool().unwrap(), e))
        .collect()
}

#[test]
fn psycopg_over_tls_is_captured_as_plaintext_from_openssl_at_both_ends() {
    let port = free_port();
    let port_s = port.to_string();
    let server = PgServer::start_with(port, PASSWORD, true);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let peer = pg_peer(&server, &port_s, "require");
    let cap = sensor.stop();

    // psycopg's wheel bundles libpq and an OpenSSL 3 (libssl-<hash>.so.3);
    // the backend uses Debian's libssl.so.3. The SSLRequest and its `S` are
    // the socket's plaintext; from the startup on, every byte is OpenSSL's
    // plaintext, parsed from its own first byte (the startup message).
    let (py_pid, local) = (peer["pid"].as_u64().unwrap() as u32, peer["local"].as_str().unwrap());
    let backend = peer["backend"].as_u64().unwrap();
    let want: Vec<(String, bool, Value)> =
        psycopg(local.rsplit(':').next().unwrap().parse().unwrap(), backend, opening_answered("S"))
            .into_iter()
            .enumerate()
            .map(|(i, e)| if i == 0 { ("kernel".into(), false, e) } else { ("openssl".into(), true, e) })
            .collect();
    let kinds = |v: &[(String, bool, Value)]| -> Vec<String> {
        v.iter().map(|(s, _, e)| format!("{s} {} {}", e["request"]["type"], e["request"]["query"])).collect()
    };
    for (who, got) in [
        ("client", sourced(&cap, py_pid, "local", local, "client")),
        ("server", sourced(&cap, backend as u32, "remote", local, "server")),
    ] {
        assert_eq!(kinds(&got), kinds(&want), "psycopg over TLS at the {who}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "psycopg over TLS at the {who}");
        }
    }
    for r in cap.of("pgsql", backend as u32) {
        assert_eq!(
            (r["comm"].as_str(), r["conn"]["local"].as_str()),
            (Some("postgres"), Some(&*format!("127.0.0.1:{port}")))
        );
    }
    // The TLS handshake the socket carried before the plaintext started is
    // left as `data` (as for every TLS connection); nothing after it is.
    for (pid, end) in [(py_pid, "local"), (backend as u32, "remote")] {
        let on_conn = |r: &&Value| r["pid"] == pid && r["conn"][end] == local;
        let first_plain = cap
            .records
            .iter()
            .filter(on_conn)
            .filter(|r| r["source"] == "openssl")
            .map(|r| r["ts_ns"].as_u64().unwrap())
            .min()
            .unwrap();
        let data: Vec<&Value> = cap.records.iter().filter(on_conn).filter(|r| r["kind"] == "data").collect();
        let client_sends = if end == "local" { "send" } else { "recv" };
        for r in &data {
            assert!(r["ts_ns"].as_u64().unwrap() < first_plain, "data after the plaintext started: {r}");
            assert!(r["seq"].as_u64().unwrap() >= if r["direction"] == client_sends { 8 } else { 1 }, "{r}");
        }
        let hello: Vec<u8> = data
            .iter()
            .filter(|r| r["direction"] == client_sends && r["seq"] == 8)
            .flat_map(|r| payload(r))
            .collect();
        assert_eq!(
            hello.get(..2),
            Some(&[0x16, 3][..]),
            "the ClientHello follows the SSLRequest at pid {pid}"
        );
    }
    assert_eq!(cap.dropped("pgsql_parse_error"), (0, 0));
    no_password_and_no_loss(&cap);
}

#[test]
fn a_connection_joined_mid_stream_is_parsed_from_its_next_request() {
    let port = free_port();
    let port_s = port.to_string();
    let server = PgServer::start(port, PASSWORD);
    let d = server.dir.path().to_path_buf();
    let (cap, peer) = capture_held("pg_hold.py", &[&port_s, PASSWORD], &d, port);
    let (pid, local) = (peer["pid"].as_u64().unwrap() as u32, peer["local"].as_str().unwrap());
    let backend = peer["backend"].as_u64().unwrap() as u32;

    // No startup was seen: user and database are unknown; every request
    // after the join is paired with its own answer.
    let want = vec![
        ex(
            "execute",
            "SELECT $1::int + 1 AS answer",
            json!([41]),
            ok(Some("SELECT 1"), &["answer"], json!([["42"]])),
        ),
        ex("query", "SELECT 'after' AS word", json!([]), ok(Some("SELECT 1"), &["word"], json!([["after"]]))),
        ex(
            "query",
            "SELECT * FROM nope",
            json!([]),
            json!({"status": "error", "command_tag": null, "columns": [], "rows": [], "rows_truncated": 0,
                   "error": {"severity": "ERROR", "code": "42P01", "message": "relation \"nope\" does not exist"}}),
        ),
    ];
    for (who, p, end, role) in [("client", pid, "local", "client"), ("server", backend, "remote", "server")] {
        let got: Vec<Value> = cap
            .of("pgsql", p)
            .into_iter()
            .filter(|r| r["conn"][end] == local)
            .map(|r| {
                assert_eq!(r["conn"]["role"], role, "{r}");
                assert_eq!(
                    (&r["user"], &r["database"], &r["source"]),
                    (&Value::Null, &Value::Null, &json!("kernel"))
                );
                json!({"request": r["request"], "response": r["response"]})
            })
            .collect();
        assert_same(&got, &want, &format!("joined mid-stream, at the {who}"));
        assert_eq!(cap.of("conn", p).iter().filter(|r| r["event"] == "midstream").count(), 1, "{who}");
    }
    // The Terminate has no answer; nothing else of the connection is data.
    assert_eq!(cap.of("data", pid), Vec::<&Value>::new());
    assert_eq!(cap.dropped("pgsql_parse_error"), (0, 0));
    no_password_and_no_loss(&cap);
}

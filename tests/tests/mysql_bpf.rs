//! MySQL protocol (issue 23): Debian's MariaDB (a data directory made by the
//! test, run as nobody on loopback) with PyMySQL (text protocol),
//! mysql-connector-python's prepared cursor (binary protocol) and the
//! `mariadb` client. Every command appears exactly once at each end with
//! its exact answer, pid, addresses and role; the password appears nowhere;
//! bytes that are no handshake response are a counted drop. Over TLS
//! (PyMySQL on the stdlib's ssl module, `mariadb --ssl`, and mariadbd: all
//! the system's libssl.so.3) the SSLRequest is the socket's and every
//! exchange from the login on is OpenSSL's plaintext, at both ends.

use nettap_e2e::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const PASSWORD: &str = "my-s3cret-password";

fn ok(affected: Option<u64>) -> Value {
    json!({"status": "ok", "columns": [], "rows": [], "rows_truncated": 0, "affected_rows": affected})
}

fn rows(columns: &[&str], rows: Value) -> Value {
    json!({"status": "ok", "columns": columns, "rows": rows, "rows_truncated": 0, "affected_rows": null})
}

fn ex(command: &str, query: &str, params: Value, response: Value) -> Value {
    json!({"request": {"command": command, "query": query, "params": params}, "response": response})
}

fn query(q: &str, response: Value) -> Value {
    ex("COM_QUERY", q, json!([]), response)
}

fn handshake() -> Value {
    let mut e = ex("HANDSHAKE", "", json!([]), ok(None));
    e["response"]["affected_rows"] = Value::Null;
    e
}

fn pymysql() -> Vec<Value> {
    vec![
        handshake(),
        query("SET NAMES utf8mb4", ok(Some(0))),
        query("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), data BLOB)", ok(Some(0))),
        query("INSERT INTO items VALUES (1, 'one', X'0001ff')", ok(Some(1))),
        query(
            "SELECT id, name, data FROM items WHERE id = 1",
            rows(&["id", "name", "data"], json!([["1", "one", {"b64": "AAH/"}]])),
        ),
        query(
            "SELECT * FROM nope",
            json!({"status": "error", "columns": [], "rows": [], "rows_truncated": 0, "affected_rows": null,
                   "error": {"code": 1146, "sqlstate": "42S02", "message": "Table 'shop.nope' doesn't exist"}}),
        ),
    ]
}

fn connector() -> Vec<Value> {
    let insert = "INSERT INTO items VALUES (?, ?, ?)";
    let select = "SELECT id, name, data FROM items WHERE id <= ? ORDER BY id";
    let prepared = |q: &str, id: u64| {
        let mut e = ex("COM_STMT_PREPARE", q, json!([]), ok(None));
        e["response"]["statement_id"] = json!(id);
        e
    };
    let executed = |q: &str, id: u64, params: Value, response: Value| {
        let mut e = ex("COM_STMT_EXECUTE", q, params, response);
        e["request"]["statement_id"] = json!(id);
        e
    };
    vec![
        handshake(),
        query("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'", ok(Some(0))),
        query("SET @@session.autocommit = ON", ok(Some(0))),
        ex("COM_PING", "", json!([]), ok(Some(0))),
        prepared(insert, 1),
        ex("COM_STMT_RESET", "", json!([]), ok(Some(0))),
        executed(insert, 1, json!([2, "two", null]), ok(Some(1))),
        prepared(select, 2),
        ex("COM_STMT_RESET", "", json!([]), ok(Some(0))),
        // Binary rows: integers as numbers.
        executed(
            select,
            2,
            json!([2]),
            rows(&["id", "name", "data"], json!([[1, "one", {"b64": "AAH/"}], [2, "two", null]])),
        ),
    ]
}

/// The mysql records of `pid` on the connection whose `end` is `addr`, as
/// `{request, response}`, after checking role, user and database.
fn exchanges(cap: &Capture, pid: u32, end: &str, addr: &str, role: &str) -> Vec<Value> {
    cap.of("mysql", pid)
        .into_iter()
        .filter(|r| r["conn"][end] == addr)
        .map(|r| {
            assert_eq!(r["conn"]["role"], role, "{r}");
            assert_eq!((r["user"].as_str(), r["database"].as_str()), (Some("app"), Some("shop")), "{r}");
            assert!(r["latency_ns"].as_u64().is_some(), "{r}");
            json!({"request": r["request"], "response": r["response"]})
        })
        .collect()
}

fn assert_same(got: &[Value], want: &[Value], what: &str) {
    let names = |v: &[Value]| -> Vec<String> {
        v.iter().map(|e| format!("{} {}", e["request"]["command"], e["request"]["query"])).collect()
    };
    assert_eq!(names(got), names(want), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{what}");
    }
}

#[test]
fn pymysql_connector_and_mariadb_client_exchanges_at_both_ends() {
    let port = free_port();
    let port_s = port.to_string();
    let server = MariaDbServer::start(port, PASSWORD);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    let out = server.dir.path().join("peer.json");
    let status = Command::new(venv_python())
        .arg(program("my_peer.py"))
        .args([&port_s, PASSWORD])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "my_peer.py failed");
    let mut cli = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port_s, "-u", "app"])
        .arg(format!("-p{PASSWORD}"))
        .args(["shop", "-e", "SELECT COUNT(*) FROM items"])
        .stdout(Stdio::null())
        .spawn_guarded();
    let cli_pid = cli.id();
    assert!(wait_child(&mut cli, "mariadb").success());
    let cap = sensor.stop();
    let peer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let py_pid = peer["pid"].as_u64().unwrap() as u32;

    for (name, want) in [("pymysql", pymysql()), ("connector", connector())] {
        let local = peer[name]["local"].as_str().unwrap();
        assert_same(
            &exchanges(&cap, py_pid, "local", local, "client"),
            &want,
            &format!("{name} at the client"),
        );
        assert_same(
            &exchanges(&cap, server.pid(), "remote", local, "server"),
            &want,
            &format!("{name} at the server"),
        );
    }
    let cli_records = cap.of("mysql", cli_pid);
    let cli_local =
        cli_records.first().expect("no mariadb client records")["conn"]["local"].as_str().unwrap();
    let want = vec![handshake(), query("SELECT COUNT(*) FROM items", rows(&["COUNT(*)"], json!([["2"]])))];
    assert_same(&exchanges(&cap, cli_pid, "local", cli_local, "client"), &want, "mariadb at the client");
    assert_same(
        &exchanges(&cap, server.pid(), "remote", cli_local, "server"),
        &want,
        "mariadb at the server",
    );
    assert!(cli_records
        .iter()
        .all(|r| r["comm"] == "mariadb" && r["conn"]["remote"] == format!("127.0.0.1:{port}")));

    // Bytes that are no handshake response: counted, kept raw, no record
    // made of them.
    let garbage = peer["garbage"]["local"].as_str().unwrap();
    let sent: Vec<u8> = cap
        .of("data", py_pid)
        .into_iter()
        .filter(|r| r["conn"]["local"] == garbage && r["direction"] == "send")
        .flat_map(payload)
        .collect();
    assert_eq!(hex(&sent), peer["garbage"]["sent"].as_str().unwrap());
    // MariaDB reads the bad packet's head alone and refuses it: at its end
    // the head is what is counted.
    assert_eq!(cap.dropped("mysql_parse_error").0, 2, "one per end");
    assert!(cap.of("mysql", py_pid).iter().all(|r| r["conn"]["local"] != garbage));

    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "the password was written");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn connections_joined_mid_stream_are_parsed_from_their_next_command() {
    let port = free_port();
    let port_s = port.to_string();
    let server = MariaDbServer::start(port, PASSWORD);
    let d = server.dir.path().to_path_buf();
    let (cap, peer) = capture_held("my_hold.py", &[&port_s, PASSWORD], &d, port);
    let pid = peer["pid"].as_u64().unwrap() as u32;

    // No handshake was seen: user and database are unknown, and whether
    // result sets end with EOF is learnt from the first one.
    let select = "SELECT id, name FROM held WHERE id <= ? ORDER BY id";
    let mut prepared = ex("COM_STMT_PREPARE", select, json!([]), ok(None));
    prepared["response"]["statement_id"] = json!(1);
    let mut executed =
        ex("COM_STMT_EXECUTE", select, json!([2]), rows(&["id", "name"], json!([[1, "one"], [2, "two"]])));
    executed["request"]["statement_id"] = json!(1);
    let wants = [
        (
            "pymysql",
            vec![
                query("SELECT id, name FROM held ORDER BY id", rows(&["id", "name"], json!([["1", "one"]]))),
                query(
                    "SELECT * FROM nope",
                    json!({"status": "error", "columns": [], "rows": [], "rows_truncated": 0, "affected_rows": null,
                           "error": {"code": 1146, "sqlstate": "42S02", "message": "Table 'shop.nope' doesn't exist"}}),
                ),
                query("INSERT INTO held VALUES (2, 'two')", ok(Some(1))),
            ],
        ),
        (
            "connector",
            vec![
                ex("COM_PING", "", json!([]), ok(Some(0))),
                prepared,
                ex("COM_STMT_RESET", "", json!([]), ok(Some(0))),
                executed,
            ],
        ),
    ];
    for (name, want) in wants {
        let local = peer[name]["local"].as_str().unwrap();
        for (who, p, end, role) in
            [("client", pid, "local", "client"), ("server", server.pid(), "remote", "server")]
        {
            let got: Vec<Value> = cap
                .of("mysql", p)
                .into_iter()
                .filter(|r| r["conn"][end] == local)
                .map(|r| {
                    assert_eq!(r["conn"]["role"], role, "{r}");
                    assert_eq!((&r["user"], &r["database"]), (&Value::Null, &Value::Null), "{r}");
                    json!({"request": r["request"], "response": r["response"]})
                })
                .collect();
            assert_same(&got, &want, &format!("{name} joined mid-stream, at the {who}"));
        }
    }
    assert_eq!(cap.of("conn", pid).iter().filter(|r| r["event"] == "midstream").count(), 2);
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "the password was written");
}

/// The mysql records of `pid` on the connection whose `end` is `addr`, as
/// (source, tls, exchange), after checking role, and user and database
/// from the login on.
fn sourced(cap: &Capture, pid: u32, end: &str, addr: &str, role: &str) -> Vec<(String, bool, Value)> {
    cap.of("mysql", pid)
        .into_iter()
        .filter(|r| r["conn"][end] == addr)
        .map(|r| {
            assert_eq!(r["conn"]["role"], role, "{r}");
            if r["request"]["command"] != "SSL_REQUEST" {
                assert_eq!((r["user"].as_str(), r["database"].as_str()), (Some("app"), Some("shop")), "{r}");
            }
            let e = json!({"request": r["request"], "response": r["response"]});
            (r["source"].as_str().unwrap().to_string(), r["conn"]["tls"].as_bool().unwrap(), e)
        })
        .collect()
}

#[test]
fn pymysql_and_the_mariadb_client_over_tls_are_captured_as_plaintext_from_openssl_at_both_ends() {
    let port = free_port();
    let port_s = port.to_string();
    let server = MariaDbServer::start_with(port, PASSWORD, true);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    // PyMySQL over the stdlib's ssl module, the mariadb client with --ssl:
    // both, and mariadbd, use the system's libssl.so.3.
    let out = server.dir.path().join("tls_peer.json");
    let status = Command::new(venv_python())
        .arg(program("my_tls_peer.py"))
        .args([&port_s, PASSWORD])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "my_tls_peer.py failed");
    let word = "SELECT CONCAT('secret', 'ive') AS word";
    let mut cli = Command::new("mariadb")
        .args(["--no-defaults", "--ssl", "-h", "127.0.0.1", "-P", &port_s, "-u", "app"])
        .arg(format!("-p{PASSWORD}"))
        .args(["shop", "-e", word])
        .stdout(Stdio::null())
        .spawn_guarded();
    let cli_pid = cli.id();
    assert!(wait_child(&mut cli, "mariadb").success());
    let cap = sensor.stop();
    let peer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let py_pid = peer["pid"].as_u64().unwrap() as u32;
    let cli_records = cap.of("mysql", cli_pid);
    let cli_local =
        cli_records.first().expect("no mariadb client records")["conn"]["local"].as_str().unwrap();

    // The greeting's answer is an SSLRequest on the socket (no answer comes
    // to it); from the login on, every exchange is OpenSSL's plaintext.
    let ssl_request = ex("SSL_REQUEST", "", json!([]), Value::Null);
    let error = json!({"status": "error", "columns": [], "rows": [], "rows_truncated": 0, "affected_rows": null,
                       "error": {"code": 1146, "sqlstate": "42S02", "message": "Table 'shop.nope' doesn't exist"}});
    let over_tls = |exchanges: Vec<Value>| -> Vec<(String, bool, Value)> {
        std::iter::once(("kernel".to_string(), false, ssl_request.clone()))
            .chain(exchanges.into_iter().map(|e| ("openssl".to_string(), true, e)))
            .collect()
    };
    let pymysql = over_tls(vec![
        handshake(),
        query("SET NAMES utf8mb4", ok(Some(0))),
        query("CREATE TABLE secure (id INT PRIMARY KEY, name VARCHAR(20))", ok(Some(0))),
        query("INSERT INTO secure VALUES (1, 'over tls')", ok(Some(1))),
        query("SELECT id, name FROM secure", rows(&["id", "name"], json!([["1", "over tls"]]))),
        query("SELECT * FROM nope", error),
    ]);
    let client = over_tls(vec![handshake(), query(word, rows(&["word"], json!([["secretive"]])))]);
    let py_local = peer["local"].as_str().unwrap();
    for (name, pid, local, want) in
        [("pymysql", py_pid, py_local, pymysql), ("mariadb", cli_pid, cli_local, client)]
    {
        for (who, got) in [
            ("client", sourced(&cap, pid, "local", local, "client")),
            ("server", sourced(&cap, server.pid(), "remote", local, "server")),
        ] {
            let brief = |v: &[(String, bool, Value)]| -> Vec<String> {
                v.iter()
                    .map(|(s, _, e)| format!("{s} {} {}", e["request"]["command"], e["request"]["query"]))
                    .collect()
            };
            assert_eq!(brief(&got), brief(&want), "{name} over TLS at the {who}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{name} over TLS at the {who}");
            }
        }
    }
    assert!(cli_records.iter().all(|r| r["comm"] == "mariadb"));
    assert!(cap
        .of("mysql", server.pid())
        .iter()
        .all(|r| r["comm"] == "mariadbd" && r["conn"]["local"] == format!("127.0.0.1:{port}")));
    assert_eq!(cap.dropped("mysql_parse_error").0, 0);
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "the password was written");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

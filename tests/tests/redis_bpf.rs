//! Redis (issue 23): Debian's redis-server with redis-py (RESP2 and RESP3,
//! a pipeline, a 1 MiB binary value, an error, pub/sub, bytes that stop
//! being RESP) and redis-cli. Every command appears exactly once at each
//! end, paired with its exact reply, with the right pid, addresses and
//! role; passwords appear nowhere.

use base64::Engine;
use nettap_e2e::*;
use serde_json::{json, Value};
use std::process::Command;

const PASSWORD: &str = "pw-s3cret-for-redis";

/// `[command, [args…]]` → the request object; reply as `[type, value]`.
fn ex(command: &str, args: &[Value], reply: (&str, Value)) -> Value {
    json!({"request": {"command": command, "args": args},
           "response": {"type": reply.0, "value": reply.1}})
}

fn ok() -> (&'static str, Value) {
    ("simple_string", json!("OK"))
}

fn err(text: &str) -> (&'static str, Value) {
    ("error", json!(text))
}

/// redis-py's greeting on a RESP2 connection (Debian's Redis 7.0 has no
/// CLIENT SETINFO: the errors are part of the real exchange).
fn resp2_greeting() -> Vec<Value> {
    vec![
        ex("AUTH", &[json!("REDACTED")], ok()),
        ex("CLIENT", &[json!("SETINFO"), json!("LIB-NAME"), json!("redis-py")], err(SETINFO)),
        ex("CLIENT", &[json!("SETINFO"), json!("LIB-VER"), json!("8.1.0")], err(SETINFO)),
    ]
}

const SETINFO: &str = "ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.";

fn expected(name: &str) -> Vec<Value> {
    let big = (0..=255u8).cycle().take(1 << 20).collect::<Vec<u8>>();
    let big = json!({"b64": base64::engine::general_purpose::STANDARD.encode(big)});
    match name {
        "resp2" => {
            let mut v = resp2_greeting();
            v.extend([
                ex("PING", &[], ("simple_string", json!("PONG"))),
                ex("SET", &[json!("greeting"), json!("hello")], ok()),
                ex("GET", &[json!("greeting")], ("bulk_string", json!("hello"))),
                ex("SET", &[json!("big"), big.clone()], ok()),
                ex("GET", &[json!("big")], ("bulk_string", big)),
                ex(
                    "NOSUCHCMD",
                    &[json!("x")],
                    err("ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' "),
                ),
                ex("PUBLISH", &[json!("news"), json!("extra")], ("integer", json!(1))),
            ]);
            v
        }
        "pipeline" => {
            let mut v = resp2_greeting();
            v.extend([
                // Six commands in one write, six replies.
                ex("SET", &[json!("counter"), json!("1")], ok()),
                ex("INCRBY", &[json!("counter"), json!("1")], ("integer", json!(2))),
                ex("GET", &[json!("counter")], ("bulk_string", json!("2"))),
                ex("RPUSH", &[json!("list"), json!("a"), json!("b")], ("integer", json!(2))),
                ex("LRANGE", &[json!("list"), json!("0"), json!("-1")], ("array", json!(["a", "b"]))),
                ex("GET", &[json!("missing")], ("null", Value::Null)),
            ]);
            v
        }
        "resp3" => {
            let hello = json!([
                "server",
                "redis",
                "version",
                "7.0.15",
                "proto",
                3,
                "id",
                "ID",
                "mode",
                "standalone",
                "role",
                "master",
                "modules",
                []
            ]);
            vec![
                ex(
                    "HELLO",
                    &[json!("3"), json!("AUTH"), json!("default"), json!("REDACTED")],
                    ("map", hello),
                ),
                ex(
                    "CLIENT",
                    &[
                        json!("MAINT_NOTIFICATIONS"),
                        json!("ON"),
                        json!("moving-endpoint-type"),
                        json!("internal-ip"),
                    ],
                    err("ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP."),
                ),
                ex("CLIENT", &[json!("SETINFO"), json!("LIB-NAME"), json!("redis-py")], err(SETINFO)),
                ex("CLIENT", &[json!("SETINFO"), json!("LIB-VER"), json!("8.1.0")], err(SETINFO)),
                ex("PING", &[], ("simple_string", json!("PONG"))),
                ex("HSET", &[json!("h"), json!("f"), json!("v")], ("integer", json!(1))),
                ex("HGETALL", &[json!("h")], ("map", json!(["f", "v"]))),
            ]
        }
        "sub" => {
            let mut v = resp2_greeting();
            v.extend([
                ex("SUBSCRIBE", &[json!("news")], ("array", json!(["subscribe", "news", 1]))),
                // A published message: no command asked for it.
                json!({"request": null, "response": {"type": "array", "value": ["message", "news", "extra"]}}),
                ex("UNSUBSCRIBE", &[json!("news")], ("array", json!(["unsubscribe", "news", 0]))),
            ]);
            v
        }
        "garbage" => vec![ex("AUTH", &[json!("REDACTED")], ok())],
        "cli" => vec![
            ex("AUTH", &[json!("REDACTED")], ok()),
            ex("SET", &[json!("cli-key"), json!("cli value")], ok()),
        ],
        _ => unreachable!(),
    }
}

/// The redis records of `pid` on the connection whose `end` ("local" or
/// "remote") is `addr`, as `{request, response}`; latency checked.
fn exchanges(cap: &Capture, pid: u32, end: &str, addr: &str, role: &str) -> Vec<Value> {
    cap.of("redis", pid)
        .into_iter()
        .filter(|r| r["conn"][end] == addr)
        .map(|r| {
            assert_eq!(r["conn"]["role"], role, "{r}");
            assert_eq!(r["source"], "kernel");
            if !r["request"].is_null() {
                assert!(r["latency_ns"].as_u64().is_some_and(|l| l > 0), "{r}");
            }
            let mut e = json!({"request": r["request"], "response": r["response"]});
            if e["request"]["command"] == "HELLO" {
                // The client id in HELLO's map counts the server's connections so far.
                assert!(e["response"]["value"][7].is_u64(), "{e}");
                e["response"]["value"][7] = json!("ID");
            }
            e
        })
        .collect()
}

fn summary(v: &[Value]) -> Vec<String> {
    v.iter().map(|e| format!("{} -> {}", e["request"]["command"], e["response"]["type"])).collect()
}

#[test]
fn redis_py_and_redis_cli_exchanges_at_both_ends() {
    let port = free_port();
    let port_s = port.to_string();
    let server = RedisServer::start(port, PASSWORD);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    let out = server.dir.path().join("peer.json");
    let status = Command::new(venv_python())
        .arg(program("redis_peer.py"))
        .args([&port_s, PASSWORD])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "redis_peer.py failed");
    let mut cli = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-a",
            PASSWORD,
            "--no-auth-warning",
            "SET",
            "cli-key",
            "cli value",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn_guarded();
    let cli_pid = cli.id();
    assert!(wait_child(&mut cli, "redis-cli").success());
    let cap = sensor.stop();

    let peer: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let py_pid = peer["pid"].as_u64().unwrap() as u32;
    for (name, conn) in peer["conns"].as_object().unwrap() {
        let (local, remote) = (conn["local"].as_str().unwrap(), conn["remote"].as_str().unwrap());
        let want = expected(name);
        for (who, got) in [
            ("client", exchanges(&cap, py_pid, "local", local, "client")),
            ("server", exchanges(&cap, server.pid(), "remote", local, "server")),
        ] {
            // Commands first (a short message), then every byte.
            assert_eq!(summary(&got), summary(&want), "{name} at the {who}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g == w, "{name} at the {who}: {} differs", g["request"]["command"]);
            }
        }
        for r in cap.of("redis", py_pid).into_iter().filter(|r| r["conn"]["local"] == local) {
            assert_eq!(r["conn"]["remote"], remote);
        }
    }
    let cli_records = cap.of("redis", cli_pid);
    assert!(cli_records
        .iter()
        .all(|r| r["comm"] == "redis-cli" && r["conn"]["remote"] == format!("127.0.0.1:{port}")));
    let cli: Vec<Value> =
        cli_records.iter().map(|r| json!({"request": r["request"], "response": r["response"]})).collect();
    assert_eq!(cli, expected("cli"));

    // After the bytes that are not RESP, each end's rest is raw data, counted.
    let garbage = peer["conns"]["garbage"]["local"].as_str().unwrap();
    let sent: Vec<u8> = cap
        .of("data", py_pid)
        .into_iter()
        .filter(|r| r["conn"]["local"] == garbage && r["direction"] == "send")
        .flat_map(payload)
        .collect();
    assert_eq!(sent, b"*1\r\n$x\r\n");
    assert_eq!(cap.dropped("redis_parse_error").0, 2, "one per end");
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "a password was written");
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
    assert_eq!(cap.dropped("http_stream_gap"), (0, 0));
}

#[test]
fn the_streaming_api_carries_redis_records_and_filters_by_their_kind() {
    let port = free_port();
    let port_s = port.to_string();
    let server = RedisServer::start(port, PASSWORD);
    let api = format!("unix:{}", server.dir.path().join("api.sock").display());
    let sensor = Sensor::start(&["--port", &port_s, "--api", &api]);
    // Only redis records: AUTH and SET at each end (the conn records are left out).
    let tail = Command::new(nettap_bin())
        .args(["tail", "--connect", &api, "--kind", "redis", "--count", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut cli = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-a",
            PASSWORD,
            "--no-auth-warning",
            "SET",
            "api-key",
            "api value",
        ])
        .stdout(std::process::Stdio::null())
        .spawn_guarded();
    let cli_pid = cli.id();
    assert!(wait_child(&mut cli, "redis-cli").success());
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success(), "nettap tail failed");
    sensor.stop();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("REDIS ")), "{text}");
    for who in [format!("redis-cli[{cli_pid}]"), format!("redis-server[{}]", server.pid())] {
        let set = lines.iter().find(|l| l.contains("SET api-key api value -> OK") && l.ends_with(&who));
        assert!(set.is_some(), "{who}: {text}");
        let auth = lines.iter().find(|l| l.contains("AUTH REDACTED -> OK") && l.ends_with(&who));
        assert!(auth.is_some(), "{who}: {text}");
    }
    assert!(!text.contains(PASSWORD));
}

#[test]
fn redis_cli_over_tls_is_captured_as_plaintext_from_openssl() {
    let port = free_port();
    let port_s = port.to_string();
    let server = RedisServer::start_with(port, PASSWORD, true);
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let cert = server.dir.path().join("cert.pem");
    let mut cli = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&cert)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-a",
            PASSWORD,
            "--no-auth-warning",
            "SET",
            "tls-key",
            "tls value",
        ])
        .stdout(std::process::Stdio::null())
        .spawn_guarded();
    let cli_pid = cli.id();
    assert!(wait_child(&mut cli, "redis-cli").success());
    let cap = sensor.stop();

    let client = cap.of("redis", cli_pid);
    let local = client.first().expect("no redis-cli records")["conn"]["local"].as_str().unwrap().to_string();
    for (who, records) in [("client", client), ("server", exchanges_raw(&cap, server.pid(), &local))] {
        let got: Vec<Value> = records
            .iter()
            .map(|r| {
                assert_eq!(
                    (r["source"].as_str(), r["conn"]["tls"].as_bool()),
                    (Some("openssl"), Some(true)),
                    "{r}"
                );
                json!({"request": r["request"], "response": r["response"]})
            })
            .collect();
        let want = vec![
            ex("AUTH", &[json!("REDACTED")], ok()),
            ex("SET", &[json!("tls-key"), json!("tls value")], ok()),
        ];
        assert_eq!(got, want, "over TLS at the {who}");
    }
    let all = cap.records.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(PASSWORD), "a password was written");
}

/// The redis records of `pid` on the connection whose remote end is `addr`.
fn exchanges_raw<'a>(cap: &'a Capture, pid: u32, addr: &str) -> Vec<&'a Value> {
    cap.of("redis", pid).into_iter().filter(|r| r["conn"]["remote"] == addr).collect()
}

#[test]
fn a_connection_joined_mid_stream_is_parsed_from_its_next_command() {
    let port = free_port();
    let port_s = port.to_string();
    let server = RedisServer::start(port, PASSWORD);
    let d = server.dir.path().to_path_buf();
    let (cap, peer) = capture_held("redis_hold.py", &[&port_s, PASSWORD], &d, port);
    let (pid, local) = (peer["pid"].as_u64().unwrap() as u32, peer["local"].as_str().unwrap());
    let want = vec![
        ex("GET", &[json!("before")], ("bulk_string", json!("the sensor"))),
        ex("INCRBY", &[json!("after"), json!("1")], ("integer", json!(1))),
    ];
    assert_eq!(exchanges(&cap, pid, "local", local, "client"), want, "at the client");
    assert_eq!(exchanges(&cap, server.pid(), "remote", local, "server"), want, "at the server");
    assert_eq!(cap.of("conn", pid)[0]["event"], "midstream");
}

//! Secrets never leave the sensor: a real client sends an `Authorization`
//! header, cookies, a JSON password and a token in the query, and the
//! server answers with a session cookie and a JSON token. The JSON Lines
//! records, the HAR and the streaming API carry markers instead (equal secrets, equal
//! markers), everything else as sent; `--no-redact` is explicit and logged.

use nettap_e2e::*;
use serde_json::Value;
use std::process::{Command, Stdio};

const SECRETS: [&str; 6] = [
    "SECRET-BEARER-0123456789",
    "SECRET-COOKIE-abcdef",
    "SECRET-PASSWORD-42",
    "SECRET-QUERY-TOKEN",
    "SECRET-SERVER-TOKEN-77",
    "SECRET-SERVER-COOKIE-88",
];

/// The login request with every kind of secret; returns curl's pid.
fn login(port: u16) -> u32 {
    let mut c = Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null", "-H", "Authorization: Bearer SECRET-BEARER-0123456789"])
        .args(["-b", "session=SECRET-COOKIE-abcdef; theme=dark", "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"user": "ann", "password": "SECRET-PASSWORD-42"}"#])
        .arg(format!("http://127.0.0.1:{port}/login?next=/home&access_token=SECRET-QUERY-TOKEN"))
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "curl").success());
    c.id()
}

fn header<'a>(headers: &'a Value, name: &str) -> &'a str {
    headers
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no {name} in {headers}"))[1]
        .as_str()
        .unwrap()
}

/// `REDACTED(len=16-31,hmac=…)` and nothing else.
fn is_marker(s: &str) -> bool {
    s.starts_with("REDACTED(len=") && s.ends_with(')') && s.contains(",hmac=") && s.len() <= 40
}

#[test]
fn secrets_are_redacted_in_records_and_har_and_equal_secrets_match() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_s = port.to_string();
    let (mut server, _server_dir) = http_peer_server(port);
    // One key for both sensors: markers then agree across them (and runs).
    let key = dir.path().join("redact.key");
    std::fs::write(&key, "a key both sensors share, 32+ bytes").unwrap();
    let config = dir.path().join("nettap.toml");
    std::fs::write(&config, format!("[capture.redact]\nkey_file = {:?}\n", key.to_str().unwrap())).unwrap();
    let config_s = config.to_str().unwrap();
    let api = format!("unix:{}", dir.path().join("api.sock").display());
    let sensor = Sensor::start(&["--port", &port_s, "--config", config_s, "--api", &api]);
    sensor.wait_for_log(&["redaction on", "stable_key=true"]);
    // A subscriber we did not write (grpcio, generic call): the raw records.
    let (api_out, api_ready) = (dir.path().join("api.bin"), dir.path().join("api.ready"));
    let mut subscriber = Command::new(venv_python())
        .arg(nettap_e2e::program("api_raw.py"))
        .args([&api, api_out.to_str().unwrap(), "1000000", "60", api_ready.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&api_ready, || subscriber.try_wait().unwrap().is_none());
    let har_path = dir.path().join("x.har");
    let har_ready = dir.path().join("har.ready");
    let mut har_sensor = Command::new(nettap_bin())
        .args(["capture", "--format", "har", "--port", &port_s, "--config", config_s, "--out"])
        .arg(&har_path)
        .arg("--ready-file")
        .arg(&har_ready)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&har_ready, || har_sensor.try_wait().unwrap().is_none());
    let clients = [login(port), login(port)];
    // The subscriber has the four exchanges once the JSON Lines sensor wrote them.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    let api_bytes = std::fs::read(&api_out).unwrap();
    let api_text = String::from_utf8_lossy(&api_bytes);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(har_sensor.id() as i32, libc::SIGINT) };
    assert!(wait_child(&mut har_sensor, "nettap (HAR)").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    let har = std::fs::read_to_string(&har_path).unwrap();
    let records: Vec<String> = cap.records.iter().map(Value::to_string).collect();
    for secret in SECRETS {
        assert!(!har.contains(secret), "{secret} in the HAR");
        assert!(!api_text.contains(secret), "{secret} in the API stream");
        assert!(records.iter().all(|r| !r.contains(secret)), "{secret} in a record");
    }

    // Both ends of both logins, redacted alike: equal secrets, equal markers.
    let mut seen: Vec<Vec<String>> = Vec::new();
    for pid in clients.into_iter().chain([server.id()]) {
        for r in cap.of("http", pid) {
            let (q, a) = (&r["request"], &r["response"]);
            assert_eq!(r["response"]["status"], 200, "{r}");
            let auth = header(&q["headers"], "authorization");
            let bearer = auth.strip_prefix("Bearer ").expect("the scheme stays");
            let cookie = header(&q["headers"], "cookie");
            let (session, theme) = cookie.split_once("; ").unwrap();
            let session = session.strip_prefix("session=").expect("cookie names stay");
            let theme = theme.strip_prefix("theme=").unwrap();
            let body: Value = serde_json::from_str(q["body"].as_str().unwrap()).expect("still JSON");
            assert_eq!(body["user"], "ann", "other fields as sent");
            let password = body["password"].as_str().unwrap();
            let path = q["path"].as_str().unwrap();
            let query =
                path.strip_prefix("/login?next=/home&access_token=").expect("other parameters as sent");
            let set_cookie = header(&a["headers"], "set-cookie");
            let server_cookie =
                set_cookie.strip_prefix("session=").unwrap().strip_suffix("; Path=/; HttpOnly").unwrap();
            let answer: Value = serde_json::from_str(a["body"].as_str().unwrap()).unwrap();
            assert_eq!(answer["ok"], true);
            let token = answer["token"].as_str().unwrap();
            let markers: Vec<String> =
                [bearer, session, theme, password, query, server_cookie, token].map(String::from).to_vec();
            for m in &markers {
                assert!(is_marker(m), "{m} in {r}");
            }
            assert!(
                password.starts_with("REDACTED(len=16-31,"),
                "length class of an 18-byte secret: {password}"
            );
            seen.push(markers);
        }
    }
    assert_eq!(seen.len(), 4, "two logins, each seen by both ends");
    assert!(seen.iter().all(|m| m == &seen[0]), "equal secrets, equal markers: {seen:?}");
    let distinct: std::collections::HashSet<&String> = seen[0].iter().collect();
    assert_eq!(distinct.len(), seen[0].len(), "different secrets, different markers");
    // The HAR (another sensor, the same key) and the API have the same markers.
    for m in &seen[0] {
        assert!(har.contains(m.as_str()), "{m} not in the HAR");
        assert!(api_text.contains(m.as_str()), "{m} not in the API stream");
    }
}

#[test]
fn no_redact_is_explicit_and_logged() {
    let port = free_port();
    let (mut server, _server_dir) = http_peer_server(port);
    let sensor = Sensor::start(&["--port", &port.to_string(), "--no-redact"]);
    let client = login(port);
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();
    assert!(cap.log.contains("redaction off (--no-redact)"), "{}", cap.log);
    let r = cap.of("http", client);
    assert_eq!(header(&r[0]["request"]["headers"], "authorization"), "Bearer SECRET-BEARER-0123456789");
}

/// One POST to `port` with a bearer token, a card token header and a JSON
/// body with a card number and a password; returns curl's pid.
fn card_request(port: u16) -> u32 {
    let mut c = Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null", "-H", "Authorization: Bearer SECRET-BEARER-0123456789"])
        .args(["-H", "X-Card-Token: CARD-TOKEN-SECRET-1", "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"card_number": "4111111111111111", "password": "SECRET-PASSWORD-42"}"#])
        .arg(format!("http://127.0.0.1:{port}/login"))
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "curl").success());
    c.id()
}

#[test]
fn each_capture_target_gets_its_own_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let [payments, sandbox, _other] = ports;
    let servers: Vec<_> = ports.iter().map(|p| http_peer_server(*p)).collect();
    let config = dir.path().join("nettap.toml");
    std::fs::write(
        &config,
        format!(
            "[[capture.redact.targets]]\nname = \"payments\"\nports = [{payments}]\n\
             headers = [\"X-Card-Token\"]\nfields = [\"card_number\"]\n\n\
             [[capture.redact.targets]]\nname = \"sandbox\"\nprocesses = [\"curl\"]\nports = [{sandbox}]\n\
             enabled = false\n"
        ),
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    let port_args: Vec<String> = ports.iter().map(u16::to_string).collect();
    for p in &port_args {
        args.extend(["--port", p.as_str()]);
    }
    let sensor = Sensor::start(&args);
    let clients = ports.map(card_request);
    for (mut s, _dir) in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let cap = sensor.stop();
    assert!(
        cap.log.lines().any(|l| l.contains("WARN")
            && l.contains("redaction off for this capture target")
            && l.contains("target=\"sandbox\"")),
        "{}",
        cap.log
    );

    let request = |pid: u32| {
        let r = cap.of("http", pid);
        assert_eq!(r.len(), 1, "one exchange for client {pid}");
        let q = &r[0]["request"];
        let body: Value = serde_json::from_str(q["body"].as_str().unwrap()).unwrap();
        (
            header(&q["headers"], "authorization").to_string(),
            header(&q["headers"], "x-card-token").to_string(),
            body["card_number"].as_str().unwrap().to_string(),
            body["password"].as_str().unwrap().to_string(),
        )
    };
    let [p, s, o] = clients.map(request);
    // payments: the global rules and the target's own.
    assert!(p.0.starts_with("Bearer REDACTED("), "{p:?}");
    assert!(is_marker(&p.1) && is_marker(&p.2) && is_marker(&p.3), "{p:?}");
    // sandbox: as sent.
    assert_eq!(
        s,
        (
            "Bearer SECRET-BEARER-0123456789".into(),
            "CARD-TOKEN-SECRET-1".into(),
            "4111111111111111".into(),
            "SECRET-PASSWORD-42".into()
        )
    );
    // Any other connection: the global rules only.
    assert!(o.0.starts_with("Bearer REDACTED("), "{o:?}");
    assert_eq!((o.1.as_str(), o.2.as_str()), ("CARD-TOKEN-SECRET-1", "4111111111111111"));
    // One key for all targets: the same password has the same marker.
    assert_eq!(p.3, o.3);
    assert_eq!(p.0, o.0);
}

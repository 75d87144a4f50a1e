//! The streaming API: `nettap capture --api ADDR` serves its records (gRPC
//! nettap.v1.Capture/Subscribe) and `nettap tail --connect ADDR` prints the
//! live exchanges, filtered, over a Unix socket or loopback TCP.

use nettap_e2e::*;
use std::process::{Command, Stdio};

/// Starts `nettap tail` with `args`, waits until it is subscribed (the
/// sensor logs nothing for that, so give it the time a connect takes),
/// runs `traffic`, and returns what tail printed.
fn tail_during(args: &[&str], traffic: impl FnOnce()) -> String {
    let tail = Command::new(nettap_bin()).arg("tail").args(args).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    traffic();
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success(), "nettap tail failed");
    String::from_utf8(out.stdout).unwrap()
}

fn curl(url: &str) -> u32 {
    let mut c = Command::new("curl").args(["-sS", "--fail", "-o", "/dev/null", url]).spawn().unwrap();
    assert!(wait_child(&mut c, "curl").success());
    c.id()
}

#[test]
fn tail_prints_the_live_exchanges_of_a_running_sensor() {
    let port = free_port();
    let port_s = port.to_string();
    let (mut server, dir) = http_peer_server(port);
    let sock = dir.path().join("api.sock");
    let api = format!("unix:{}", sock.display());
    let sensor = Sensor::start(&["--port", &port_s, "--api", &api]);
    let mut curls = Vec::new();
    // Only http records, only our port, stop after the client's two.
    let text = tail_during(&["--connect", &api, "--kind", "http", "--port", &port_s, "--count", "4"], || {
        curls.push(curl(&format!("http://127.0.0.1:{port}/one")));
        curls.push(curl(&format!("http://127.0.0.1:{port}/two")));
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(sock.exists());
    sensor.stop();
    // A stopped sensor leaves no socket behind (on a node, a hostPath outlives the pod).
    assert!(!sock.exists(), "{} left after the sensor stopped", sock.display());

    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (path, pid) in [("/one", curls[0]), ("/two", curls[1])] {
        let want = format!("GET     http://127.0.0.1:{port}{path}  200");
        assert!(lines.iter().any(|l| l.contains(&want) && l.ends_with(&format!("curl[{pid}]"))), "{text}");
        let server_pid = format!("[{}]", server.id());
        assert!(
            lines.iter().any(|l| l.contains(&want) && l.ends_with(&server_pid)),
            "the server side: {text}"
        );
    }
    assert!(lines.iter().all(|l| l.contains("http/1.1")), "{text}");
}

#[test]
fn tail_over_loopback_tcp_filters_by_pid() {
    let port = free_port();
    let port_s = port.to_string();
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let (mut server, _dir) = http_peer_server(port);
    let sensor = Sensor::start(&["--port", &port_s, "--api", &api]);
    let server_pid = server.id().to_string();
    let text =
        tail_during(&["--connect", &api, "--pid", &server_pid, "--kind", "http", "--count", "1"], || {
            curl(&format!("http://127.0.0.1:{port}/only-server"));
        });
    let _ = server.kill();
    let _ = server.wait();
    sensor.stop();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("/only-server") && text.trim_end().ends_with(&format!("[{server_pid}]")), "{text}");
}

#[test]
fn the_api_elsewhere_needs_tls_and_authentication_and_a_missing_sensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let (cert, key) = (pki.server_cert.to_str().unwrap(), pki.server_key.to_str().unwrap());
    for (extra, want) in [
        (vec![], "needs --api-tls-cert and --api-tls-key"),
        (
            vec!["--api-tls-cert", cert, "--api-tls-key", key],
            "still needs --api-token-file or --api-client-ca",
        ),
        (vec!["--api-tls-cert", cert], "--api-tls-cert and --api-tls-key go together"),
    ] {
        let out = Command::new(nettap_bin())
            .args(["capture", "--api", "0.0.0.0:7777", "--duration", "1", "--out", "/dev/null"])
            .args(&extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("0.0.0.0:7777 is not a loopback address") || extra.len() == 2, "{err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let out = Command::new(nettap_bin())
        .args(["tail", "--connect", "unix:/nonexistent/api.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("nettap: error: streaming from unix:/nonexistent/api.sock"), "{err}");
}

/// `nettap tail ARGS` run in namespace `ns`, killed after 30 s.
fn tail_in(ns: &str, args: &[&str]) -> std::process::Output {
    let mut c = in_ns(Some(ns), &nettap_bin())
        .arg("tail")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_child(&mut c, "nettap tail");
    c.wait_with_output().unwrap()
}

/// Bound to an address other hosts reach (a veth the test made), the API
/// serves only TLS subscribers with a client certificate from the CA and
/// the token; the others are refused and the sensor goes on serving.
#[test]
fn the_api_bound_elsewhere_serves_only_authenticated_tls_subscribers() {
    let pair = NetNsPair::new(60);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[&pair.a4]);
    let token = dir.path().join("token");
    std::fs::write(&token, "c2VjcmV0LXRva2VuLWZvci10aGUtYXBp\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "c2VjcmV0LXRva2VuLWZvci10aGUtYXBQ\n").unwrap();
    let port = free_port();
    let port_s = port.to_string();
    let (mut server, _server_dir) = http_peer_server(port);
    let api = format!("{}:{}", pair.a4, free_port());
    let p = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    let (ca, cert, key, ccert, ckey) =
        (p(&pki.ca), p(&pki.server_cert), p(&pki.server_key), p(&pki.client_cert), p(&pki.client_key));
    let sensor = Sensor::start_in_netns(
        &pair.a,
        &[
            "--port",
            &port_s,
            "--api",
            &api,
            "--api-tls-cert",
            &cert,
            "--api-tls-key",
            &key,
            "--api-client-ca",
            &ca,
            "--api-token-file",
            token.to_str().unwrap(),
        ],
    );
    sensor.wait_for_log(&["streaming API served", "TLS with client certificates + bearer token"]);

    let base = ["--connect", &api, "--kind", "http", "--count", "1"];
    let refused = |extra: &[&str], why: &str| {
        let out = tail_in(&pair.b, &[&base[..], extra].concat());
        assert!(!out.status.success(), "{why}: tail was served");
        assert!(out.stdout.is_empty(), "{why}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tok = token.to_str().unwrap();
    let err = refused(&["--token-file", tok], "plaintext");
    assert!(err.contains("does the sensor serve TLS? then pass --tls-ca"), "{err}");
    let err = refused(&["--tls-ca", &ca, "--token-file", tok], "no client certificate");
    assert!(err.contains("pass --tls-cert and --tls-key"), "{err}");
    let err = refused(&["--tls-ca", &ca, "--tls-cert", &ccert, "--tls-key", &ckey], "no token");
    assert!(err.contains("bearer token is required"), "{err}");
    let err = refused(
        &["--tls-ca", &ca, "--tls-cert", &ccert, "--tls-key", &ckey, "--token-file", wrong.to_str().unwrap()],
        "wrong token",
    );
    assert!(err.contains("bearer token is required"), "{err}");
    sensor.wait_for_log(&["API subscriber refused", "no token", &pair.b4]);
    sensor.wait_for_log(&["API subscriber refused", "wrong token", &pair.b4]);

    // The sensor still serves one with everything right, from the other namespace.
    let mut good = in_ns(Some(&pair.b), &nettap_bin())
        .arg("tail")
        .args(base)
        .args([
            "--port",
            &port_s,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &ccert,
            "--tls-key",
            &ckey,
            "--token-file",
            tok,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let client = curl(&format!("http://127.0.0.1:{port}/through-tls"));
    assert!(wait_child(&mut good, "nettap tail").success());
    let text = String::from_utf8(good.wait_with_output().unwrap().stdout).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    sensor.stop();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&format!("GET     http://127.0.0.1:{port}/through-tls  200")), "{text}");
    assert!(text.contains(&format!("[{client}]")) || text.contains(&format!("[{}]", server.id())), "{text}");
}

/// Reads `tail`'s stdout lines on a thread; `wait_for` waits (bounded) for a
/// line containing every one of some words.
struct TailLines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TailLines {
    fn read(stdout: std::process::ChildStdout) -> TailLines {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        TailLines { lines }
    }

    fn wait_for(&self, words: &[&str]) {
        let start = std::time::Instant::now();
        while !self.lines.lock().unwrap().iter().any(|l| words.iter().all(|w| l.contains(w))) {
            assert!(start.elapsed().as_secs() < 30, "tail never printed {words:?}: {:?}", self.lines);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// `--output json` prints the very bytes of the sensor's JSON Lines output
/// (every kind, data and drops included), and tail follows the sensor
/// across a restart on the same socket.
#[test]
fn tail_json_prints_the_sensors_own_lines_and_follows_a_restart() {
    let port = free_port();
    let port_s = port.to_string();
    let (mut server, dir) = http_peer_server(port);
    let api = format!("unix:{}", dir.path().join("api.sock").display());
    let first = Sensor::start(&["--port", &port_s, "--api", &api]);
    let mut tail = KillOnDrop(
        Command::new(nettap_bin())
            .args(["tail", "--connect", &api, "--output", "json", "--port", &port_s])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = TailLines::read(tail.stdout.take().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = curl(&format!("http://127.0.0.1:{port}/before-restart"));
    lines.wait_for(&["\"kind\":\"http\"", "/before-restart", &format!("\"pid\":{before}")]);
    // Every record of the connection, its close included, before the sensor goes.
    lines.wait_for(&["\"event\":\"close\"", &format!("\"pid\":{before}")]);
    let first = first.stop();

    let second = Sensor::start(&["--port", &port_s, "--api", &api]);
    let start = std::time::Instant::now();
    // The tail subscribes again within its back-off (at most 2 s): probe with
    // requests until one shows up (bounded), then check one made after that.
    while !lines.all().iter().any(|l| l.contains("/probe") && l.contains("\"kind\":\"http\"")) {
        assert!(start.elapsed().as_secs() < 30, "tail did not come back: {:?}", lines.all());
        curl(&format!("http://127.0.0.1:{port}/probe"));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let after = curl(&format!("http://127.0.0.1:{port}/after-restart"));
    lines.wait_for(&["\"kind\":\"http\"", "/after-restart", &format!("\"pid\":{after}")]);
    lines.wait_for(&["\"event\":\"close\"", &format!("\"pid\":{after}")]);
    let second = second.stop();
    let _ = server.kill();
    let _ = server.wait();
    let _ = tail.kill();
    let _ = tail.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut tail.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("sensor went away; reconnecting") && err.contains("subscribed again"), "{err}");

    // Every line tail printed is, byte for byte, a line of one sensor's output,
    // and every line of that output for our connections reached tail.
    let printed = lines.all();
    let written: Vec<&str> = first.text.lines().chain(second.text.lines()).collect();
    for l in &printed {
        assert!(written.contains(&l.as_str()), "tail printed a line no sensor wrote: {l}");
    }
    for pid in [before, after] {
        let ours: Vec<&&str> = written.iter().filter(|l| l.contains(&format!("\"pid\":{pid},"))).collect();
        for k in ["\"kind\":\"conn\"", "\"kind\":\"http\""] {
            assert!(ours.iter().any(|l| l.contains(k)), "no {k} record of curl {pid} in {written:?}");
        }
        for l in ours {
            assert!(printed.iter().any(|p| p == *l), "tail missed {l}");
        }
    }
}

//! The streaming API: `nettap capture --api ADDR` serves its records (gRPC
//! nettap.v1.Capture/Subscribe) and `nettap tail --connect ADDR` prints the
//! live exchanges, filtered, over a Unix socket or loopback TCP.

use nettap_e2e::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn http_server(port: u16) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut server = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/http_peer.py"))
        .args(["server", "--port", &port.to_string(), "--ready"])
        .arg(&ready)
        .spawn()
        .unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    (server, dir)
}

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
    let (mut server, dir) = http_server(port);
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
    sensor.stop();

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
    let (mut server, _dir) = http_server(port);
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
fn the_api_is_local_only_and_a_missing_sensor_is_a_clear_error() {
    let out = Command::new(nettap_bin())
        .args(["capture", "--api", "0.0.0.0:7777", "--duration", "1", "--out", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    let out = Command::new(nettap_bin())
        .args(["tail", "--connect", "unix:/nonexistent/api.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("nettap: error: streaming from unix:/nonexistent/api.sock"), "{err}");
}

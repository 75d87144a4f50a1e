//! TLS plaintext from BoringSSL linked into grpcio's stripped extension
//! module (gRPC's C core): a grpcio server and client over a TLS channel
//! with a test CA, both on 127.0.0.1, both started after the sensor. Each
//! end's calls must be `http` records with `source: "boringssl"`, the
//! request and response messages exact (nonces, and a message of 64 KiB
//! that spans several TLS records), the right pid and role, the connection
//! of the real socket (the kernel's own `conn` records of that pid), and no
//! ciphertext written.

use nettap_e2e::*;
use serde_json::Value;
use std::process::Command;

/// The `probe attached` lines name the extension module, each function and
/// the library, all attached.
fn assert_boringssl_attached(log: &str) {
    for function in ["SSL_write", "SSL_read", "SSL_do_handshake", "bio_write"] {
        assert!(
            log.lines().any(|l| l.contains("probe attached")
                && l.contains("cygrpc.")
                && l.contains(function)
                && l.contains("BoringSSL")
                && l.contains("ok=true")),
            "no probe attached line for {function} on cygrpc:\n{log}"
        );
    }
}

/// The kernel's `conn` record of `pid`'s connection to or from `port`:
/// (local, remote) of the real socket.
fn kernel_conn(cap: &Capture, pid: u32, port: u16) -> (String, String) {
    let port_end = format!("127.0.0.1:{port}");
    let opens: Vec<&Value> = cap
        .of("conn", pid)
        .into_iter()
        .filter(|r| {
            r["event"] == "open" && (r["conn"]["local"] == port_end || r["conn"]["remote"] == port_end)
        })
        .collect();
    assert_eq!(opens.len(), 1, "one connection of pid {pid}: {opens:#?}");
    let c = &opens[0]["conn"];
    (c["local"].as_str().unwrap().to_string(), c["remote"].as_str().unwrap().to_string())
}

#[test]
fn grpcio_tls_both_ends_exact_with_the_real_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let port_s = port.to_string();
    let ready = dir.path().join("ready");
    let peer = program("grpc_peer.py");
    let mut args = vec!["--port", port_s.as_str()];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);

    let mut server = Command::new(venv_python())
        .arg(&peer)
        .args(["tls-server", &port_s])
        .arg(&ready)
        .arg(&pki.server_cert)
        .arg(&pki.server_key)
        .spawn_guarded();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    // The server mapped the module at `import grpc`; its probes (on the
    // file, so the client's mapping of it too) are in place before the
    // client starts.
    sensor.wait_for_log(&["probe attached", "cygrpc.", "bio_write"]);
    // A nonce per run: the messages cannot come from another test's traffic.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let nonce = format!("{nanos:x}-{}", std::process::id());
    let mut client = Command::new(venv_python())
        .arg(&peer)
        .args(["tls-client", &port_s])
        .arg(&pki.ca)
        .arg(&nonce)
        .spawn()
        .unwrap();
    assert!(wait_child(&mut client, "grpcio TLS client").success());
    let server_pid = server.id();
    drop(server);
    let cap = sensor.stop();

    assert_boringssl_attached(&cap.log);
    let small = format!("ping:{nonce}");
    let big = format!("{nonce}{}", "x".repeat(65536));
    let (client_local, client_remote) = kernel_conn(&cap, client.id(), port);
    assert_eq!(client_remote, format!("127.0.0.1:{port}"));
    let (server_local, server_remote) = kernel_conn(&cap, server_pid, port);
    assert_eq!(
        (server_local.as_str(), server_remote.as_str()),
        (client_remote.as_str(), client_local.as_str())
    );
    for (pid, role, local, remote) in [
        (client.id(), "client", &client_local, &client_remote),
        (server_pid, "server", &server_local, &server_remote),
    ] {
        let calls = cap.of("http", pid);
        assert_eq!(calls.len(), 2, "{role}: {calls:#?}\n{}", cap.log);
        for (r, msg) in calls.iter().zip([&small, &big]) {
            assert_eq!(r["source"], "boringssl", "{role}: {r}");
            assert_eq!(r["protocol"], "h2", "{role}");
            assert_eq!(r["conn"]["tls"], true, "{role}");
            assert_eq!(r["conn"]["role"], role, "{role}");
            assert_eq!(r["conn"]["local"], local.as_str(), "{role}");
            assert_eq!(r["conn"]["remote"], remote.as_str(), "{role}");
            assert_eq!(r["request"]["path"], "/nettap.test.Echo/Say", "{role}");
            let g = &r["grpc"];
            assert_eq!(g["status"], 0, "{role}: {r}");
            assert!(
                g["request_messages"] == serde_json::json!([{ "text": msg }]),
                "{role}: request of {} bytes differs",
                msg.len()
            );
            let answer = format!("pong:{msg}");
            assert!(
                g["response_messages"] == serde_json::json!([{ "text": answer }]),
                "{role}: response of {} bytes differs",
                answer.len()
            );
        }
        // No ciphertext: no data record of this process at all (the h2
        // plaintext all became http records), and the handshake was never written.
        assert!(cap.of("data", pid).is_empty(), "{role}: data records {:#?}", cap.of("data", pid));
    }
    for reason in ["tls_socket_unknown", "ringbuf_full"] {
        assert_eq!(cap.dropped(reason), (0, 0), "{reason}");
    }
}

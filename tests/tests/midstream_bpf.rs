//! A connection opened before the sensor starts: `midstream` records for
//! both ends, then exact bytes from the next byte on, at their true stream
//! offsets (including a server read already blocked when the sensor attached).

use nettap_e2e::*;

#[test]
fn connection_opened_before_the_sensor() {
    // Inside the ephemeral range, ports alone cannot tell the roles apart:
    // the listener in the server's namespace must.
    let port = free_ephemeral_port();
    let hold = tempfile::tempdir().unwrap();
    let hold_file = hold.path().join("go");
    let hold_s = hold_file.to_str().unwrap().to_string();
    // The server keeps its listener until the sensor has seen its side: a
    // server gone before the sensor handled its first event leaves no
    // listener to tell its role by (said in the README).
    let exit_file = hold.path().join("exit");
    let exit_s = exit_file.to_str().unwrap().to_string();
    // The client finishes message 0 before the sensor exists, then waits.
    let ex = Exchange::server_with(None, "127.0.0.1", port, SIZES, &["--exit-file", &exit_s]).client(
        None,
        "127.0.0.1",
        &["--hold-at", "1", "--hold-file", &hold_s],
    );
    let server_pid = ex.server_pid();
    wait_for_file(&hold.path().join("go.waiting"), || true);

    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    std::fs::write(&hold_file, b"").unwrap();
    sensor.wait_for_record("the server's midstream record", |r| {
        r["kind"] == "conn" && r["event"] == "midstream" && r["pid"] == server_pid
    });
    std::fs::write(&exit_file, b"").unwrap();
    let (server, client, _dir) = ex.finish();
    let cap = sensor.stop();

    let first = SIZES[0];
    for (peer, role) in [(&client, "client"), (&server, "server")] {
        let conns = cap.of("conn", peer.pid);
        assert_eq!(conns[0]["event"], "midstream", "first conn record of pid {}: {:?}", peer.pid, conns);
        assert!(conns.iter().all(|r| r["event"] != "open"), "no open for a connection opened before");
        // Role inference gives the role the kernel could not see.
        assert_exact(&cap, peer, role, first);
    }
}

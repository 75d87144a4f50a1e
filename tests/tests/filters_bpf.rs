//! `--pid` and `--port` keep only what they name, and the sensor never captures itself.

use nettap_e2e::*;
use std::collections::BTreeSet;

fn pids_and_ports(cap: &Capture) -> (BTreeSet<u64>, BTreeSet<String>) {
    let data: Vec<_> = cap.records.iter().filter(|r| r["kind"] == "data" || r["kind"] == "conn").collect();
    let pids = data.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    let ports = data
        .iter()
        .flat_map(|r| [r["conn"]["local"].clone(), r["conn"]["remote"].clone()])
        .map(|a| a.as_str().unwrap().rsplit(':').next().unwrap().to_string())
        .collect();
    (pids, ports)
}

#[test]
fn port_filter_keeps_only_that_port() {
    let (p1, p2) = (free_port(), free_port());
    let p1s = p1.to_string();
    let sensor = Sensor::start(&["--port", &p1s]);
    let a = Exchange::start(None, "127.0.0.1", None, "127.0.0.1", p1, &[10, 20], &[]);
    let b = Exchange::start(None, "127.0.0.1", None, "127.0.0.1", p2, &[10, 20], &[]);
    let (sa, ca, _da) = a.finish();
    let (sb, cb, _db) = b.finish();
    let cap = sensor.stop();
    let (pids, ports) = pids_and_ports(&cap);
    assert!(ports.contains(&p1s), "{ports:?}");
    assert!(!ports.contains(&p2.to_string()), "port {p2} captured: {ports:?}");
    assert_eq!(pids, BTreeSet::from([sa.pid as u64, ca.pid as u64]));
    assert!(!pids.contains(&(sb.pid as u64)) && !pids.contains(&(cb.pid as u64)));
}

#[test]
fn pid_filter_keeps_only_that_process() {
    let port = free_port();
    // The server exists before the sensor, so its pid can be named.
    let ex = Exchange::server(None, "127.0.0.1", port, &[10, 20, 4095]);
    let pid = ex.server_pid().to_string();
    let mut args = vec!["--pid", &pid];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let (server, client, _dir) = ex.client(None, "127.0.0.1", &[]).finish();
    let cap = sensor.stop();
    let (pids, _) = pids_and_ports(&cap);
    assert_eq!(pids, BTreeSet::from([server.pid as u64]), "client {} must not appear", client.pid);
    assert_exact(&cap, &server, "server", 0);
}

#[test]
fn the_sensor_never_captures_itself() {
    // With --pid naming the sensor itself, nothing may be captured even though
    // it is busy writing records; and unfiltered, its pid never appears.
    let port = free_port();
    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s]);
    let sensor_pid = sensor.pid() as u64;
    let (_s, _c, _d) = Exchange::start(None, "127.0.0.1", None, "127.0.0.1", port, &[10], &[]).finish();
    let cap = sensor.stop();
    let (pids, _) = pids_and_ports(&cap);
    assert!(!pids.is_empty());
    assert!(!pids.contains(&sensor_pid));
}

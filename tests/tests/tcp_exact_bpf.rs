//! Random payloads of 1 B … 1 MiB (0 B … 4 MiB on IPv4 loopback) each way over
//! one keep-alive connection, on loopback and across two network namespaces,
//! IPv4 and IPv6: the records
//! must reassemble to exactly those bytes with the right pid, comm,
//! endpoints, role and direction.

use nettap_e2e::*;

fn exact(server_ns: Option<&str>, listen: &str, client_ns: Option<&str>, connect: &str) {
    exact_sizes(server_ns, listen, client_ns, connect, SIZES);
}

fn exact_sizes(
    server_ns: Option<&str>,
    listen: &str,
    client_ns: Option<&str>,
    connect: &str,
    sizes: &[usize],
) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let ex = Exchange::start(server_ns, listen, client_ns, connect, port, sizes, &[]);
    let (server, client, _dir) = ex.finish();
    let cap = sensor.stop();

    assert_exact(&cap, &client, "client", 0);
    assert_exact(&cap, &server, "server", 0);
    for (peer, role) in [(&client, "client"), (&server, "server")] {
        let opens: Vec<_> = cap.of("conn", peer.pid).into_iter().filter(|r| r["event"] == "open").collect();
        assert_eq!(opens.len(), 1, "one open for pid {}: {opens:?}", peer.pid);
        assert_eq!(opens[0]["conn"]["role"], role);
        assert_eq!(opens[0]["conn"]["local"], peer.local.as_str());
        assert_eq!(opens[0]["conn"]["remote"], peer.remote.as_str());
        let closes = cap.of("conn", peer.pid).into_iter().filter(|r| r["event"] == "close").count();
        assert_eq!(closes, 1, "one close for pid {}", peer.pid);
    }
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0));
}

#[test]
fn loopback_ipv4() {
    exact(None, "127.0.0.1", None, "127.0.0.1");
}

#[test]
fn loopback_ipv4_from_0_b_to_4_mib() {
    exact_sizes(None, "127.0.0.1", None, "127.0.0.1", &[0, 1, 100, 4095, 65537, 1 << 20, 4 << 20]);
}

#[test]
fn loopback_ipv6() {
    exact(None, "::1", None, "::1");
}

#[test]
fn veth_between_namespaces_ipv4() {
    let ns = NetNsPair::new(1);
    exact(Some(&ns.b), &ns.b4, Some(&ns.a), &ns.b4);
}

#[test]
fn veth_between_namespaces_ipv6() {
    let ns = NetNsPair::new(2);
    exact(Some(&ns.b), &ns.b6, Some(&ns.a), &ns.b6);
}

#[test]
fn bytes_peeked_before_they_are_read_are_captured_once() {
    // recv(MSG_PEEK) leaves the bytes queued: only the read that takes them counts.
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let peek = ["--io", "peek"];
    let (server, client, _dir) = Exchange::server_with(None, "127.0.0.1", port, SIZES, &peek)
        .client(None, "127.0.0.1", &peek)
        .finish();
    let cap = sensor.stop();
    assert_exact(&cap, &client, "client", 0);
    assert_exact(&cap, &server, "server", 0);
}

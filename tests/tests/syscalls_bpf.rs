//! Every syscall family of the tracepoint path carries exact bytes:
//! write/read, writev/readv and sendmsg/recvmsg (several iovecs per call,
//! one of them tiny), and sendfile, whose bytes never pass through user
//! memory and so are reported as counted-but-truncated.

use nettap_e2e::*;

fn exact_with(io: &str, send_probe: &str, recv_probe: &str) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let extra = ["--io", io];
    let (server, client, _dir) = Exchange::server_with(None, "127.0.0.1", port, SIZES, &extra)
        .client(None, "127.0.0.1", &extra)
        .finish();
    let cap = sensor.stop();
    assert_exact(&cap, &client, "client", 0);
    assert_exact(&cap, &server, "server", 0);
    for peer in [&client, &server] {
        for r in cap.of("data", peer.pid) {
            let want = if r["direction"] == "send" { send_probe } else { recv_probe };
            assert_eq!(r["probe"], want, "{r}");
        }
    }
}

#[test]
fn write_and_read() {
    exact_with("write", "tracepoint:syscalls:sys_exit_write", "tracepoint:syscalls:sys_exit_read");
}

#[test]
fn writev_and_readv() {
    exact_with("vec", "tracepoint:syscalls:sys_exit_writev", "tracepoint:syscalls:sys_exit_readv");
}

#[test]
fn sendmsg_and_recvmsg() {
    exact_with("msg", "tracepoint:syscalls:sys_exit_sendmsg", "tracepoint:syscalls:sys_exit_recvmsg");
}

#[test]
fn sendfile_is_counted_not_invented() {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = Sensor::start(&args);
    let sizes = [100, 70000];
    let (server, client, _dir) = Exchange::server_with(None, "127.0.0.1", port, &sizes, &["--sendfile"])
        .client(None, "127.0.0.1", &[])
        .finish();
    let cap = sensor.stop();
    // The client's view is complete and exact.
    assert_eq!(cap.stream(client.pid, "recv").bytes, client.recv);
    // The server's sendfile calls: offsets and counts, no payload.
    let sent: Vec<_> = cap.of("data", server.pid).into_iter().filter(|r| r["direction"] == "send").collect();
    assert!(!sent.is_empty());
    let mut next = 0u64;
    for r in &sent {
        assert_eq!(r["probe"], "tracepoint:syscalls:sys_exit_sendfile64", "{r}");
        assert_eq!(payload(r).len(), 0, "{r}");
        assert_eq!(r["seq"].as_u64().unwrap(), next, "{r}");
        next += r["truncated"].as_u64().unwrap();
    }
    assert_eq!(next as usize, server.sent.len());
}

//! Checks of records against what peers sent and received: bytes, process,
//! endpoints, role, source.

use crate::peers::PeerInfo;
use crate::sensor::Capture;
use serde_json::Value;

/// Checks that `peer`'s records say exactly what it sent and received,
/// starting at byte `from` of each direction, with the right process,
/// endpoints and role, all from the kernel's plaintext TCP probes.
pub fn assert_exact(cap: &Capture, peer: &PeerInfo, role: &str, from: usize) {
    assert_exact_from(cap, peer, role, from, "kernel");
}

/// `assert_exact` for records of `source` (`kernel`, or a TLS source whose
/// records must say `tls: true` and be the only data records of the peer:
/// no ciphertext).
pub fn assert_exact_from(cap: &Capture, peer: &PeerInfo, role: &str, from: usize, source: &str) {
    let data = cap.of("data", peer.pid);
    assert!(!data.is_empty(), "no data records for pid {}", peer.pid);
    let tls = source != "kernel";
    for r in &data {
        assert_eq!(r["comm"], peer.comm.as_str(), "{r}");
        assert_eq!(r["source"], source, "{r}");
        assert_eq!(r["conn"]["local"], peer.local.as_str(), "{r}");
        assert_eq!(r["conn"]["remote"], peer.remote.as_str(), "{r}");
        assert_eq!(r["conn"]["role"], role, "{r}");
        assert_eq!(r["conn"]["tls"], tls, "{r}");
        let probe = r["probe"].as_str().unwrap();
        let ok = match source {
            "kernel" => probe.starts_with("tracepoint:syscalls:sys_exit_") || probe.starts_with("kprobe:"),
            "go-tls" => probe.starts_with("uprobe:crypto/tls.(*Conn)."),
            "gnutls" => {
                probe.starts_with("uprobe:gnutls_record_send")
                    || probe.starts_with("uretprobe:gnutls_record_recv")
            }
            "nss" => ["uprobe:ssl_Write", "uprobe:ssl_Send", "uretprobe:ssl_Read", "uretprobe:ssl_Recv"]
                .contains(&probe),
            _ => {
                ["uprobe:SSL_write", "uretprobe:SSL_read", "uprobe:SSL_read"]
                    .iter()
                    .any(|p| probe.starts_with(p))
                    || ["uprobe:ssl_write_internal", "uretprobe:ssl_read_internal"].contains(&probe)
            }
        };
        assert!(ok, "{r}");
    }
    for (dir, want) in [("send", &peer.sent), ("recv", &peer.recv)] {
        let s = cap.stream(peer.pid, dir);
        assert!(s.gaps.is_empty(), "{dir} of pid {} has gaps {:?}", peer.pid, s.gaps);
        assert_eq!(s.start, from as u64, "{dir} of pid {} starts at {}", peer.pid, s.start);
        assert_eq!(s.bytes.len(), want.len() - from, "{dir} length of pid {}", peer.pid);
        assert!(s.bytes == want[from..], "{dir} bytes of pid {} differ", peer.pid);
    }
}

/// An echo exchange over OpenSSL at both ends, one per client `(pid, n,
/// local address)` to the server `server_pid` on `listen`: each client sent
/// `"{n}\n"` and an `n`-byte pattern body and got the body back. The
/// client's records are exactly that from byte 0 (`source: "openssl"`, no
/// ciphertext, comm `client_comm`); the server's streams of the same
/// connection are the same bytes the other way; every server record is
/// TLS plaintext of the server's role on `listen`.
pub fn assert_openssl_echoes(
    cap: &Capture,
    clients: &[(u32, usize, String)],
    client_comm: &str,
    server_pid: u32,
    listen: &str,
) {
    for (pid, n, local) in clients {
        let body = pattern_body("req", *n).into_bytes();
        let mut request = format!("{n}\n").into_bytes();
        request.extend_from_slice(&body);
        let client = PeerInfo {
            pid: *pid,
            comm: client_comm.to_string(),
            local: local.clone(),
            remote: listen.to_string(),
            sent: request.clone(),
            recv: body.clone(),
        };
        assert_exact_from(cap, &client, "client", 0, "openssl");
        assert!(cap.conn_stream(server_pid, local, "recv") == request, "the server received {n} bytes");
        assert!(cap.conn_stream(server_pid, local, "send") == body, "the server echoed {n} bytes");
    }
    let served = cap.of("data", server_pid);
    assert!(!served.is_empty(), "the server's records:\n{}", cap.log);
    for r in served {
        assert_eq!(r["source"], "openssl", "no ciphertext: {r}");
        assert_eq!(r["conn"]["role"], "server", "{r}");
        assert_eq!(r["conn"]["tls"], true, "{r}");
        assert_eq!(r["conn"]["local"], listen, "{r}");
    }
}

/// The test bodies the peers make (node_https.js, php_https.php, files
/// served by nginx): `tag` + "0123456789" repeated to `n` bytes.
pub fn pattern_body(tag: &str, n: usize) -> String {
    let unit = format!("{tag}0123456789");
    unit.bytes().cycle().take(n).map(char::from).collect()
}

/// An `http` record's request or response body is `want`: kept up to 1 MiB
/// per message (the default limit), the rest counted in `body_truncated`.
pub fn assert_http_body(message: &Value, want: &str, who: &str) {
    const KEPT: usize = 1 << 20;
    let got = message["body"].as_str().unwrap_or_else(|| panic!("{who}: no text body in {message}"));
    let kept = want.len().min(KEPT);
    assert!(got == &want[..kept], "{who}: body of {} bytes differs from the {kept} bytes sent", got.len());
    assert_eq!(message["body_truncated"].as_u64().unwrap_or(0), (want.len() - kept) as u64, "{who}");
}

/// `records` are one `http` exchange per size: a POST of `req` pattern bytes
/// to `/resp_N` on `localhost:port` answered 200 with the `resp_N` pattern
/// file (`Nginx::tls_pattern_files`), seen from `role`'s end through `source`.
pub fn assert_posts(records: &[&Value], sizes: &[usize], role: &str, port: u16, source: &str) {
    assert_eq!(records.len(), sizes.len(), "{role}: one exchange per request: {}", records.len());
    for (r, &n) in records.iter().zip(sizes) {
        assert_eq!(r["source"], source, "{role}");
        assert_eq!(r["conn"]["tls"], true, "{role}");
        assert_eq!(r["conn"]["role"], role);
        let server_end = if role == "client" { &r["conn"]["remote"] } else { &r["conn"]["local"] };
        assert_eq!(server_end, &format!("127.0.0.1:{port}"));
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["path"], format!("/resp_{n}"));
        assert_eq!(r["request"]["authority"], format!("localhost:{port}"));
        assert_http_body(&r["request"], &pattern_body("req", n), role);
        assert_eq!(r["response"]["status"], 200, "{role}: /resp_{n}");
        assert_http_body(&r["response"], &pattern_body("resp", n), role);
    }
}

/// Whether the `probe="…"` of a `probe attached` line is function `f`, or
/// an internal function probed for it (`ssl_read_internal (SSL_read_ex,
/// SSL_read)`: see probes/shared_callee.rs).
pub fn probe_label_names(line: &str, f: &str) -> bool {
    let Some(label) = line.split("probe=\"").nth(1).and_then(|rest| rest.split('"').next()) else {
        return false;
    };
    label == f
        || label
            .split_once(" (")
            .is_some_and(|(_, callers)| callers.trim_end_matches(')').split(", ").any(|c| c == f))
}

//! The records a busy node writes most (`http`, `data`, `conn`) as JSON
//! bytes straight from the event data: keys are literals, commas are where
//! they are known to be, header pairs and addresses go out without serde's
//! per-value calls. The `Serialize` impls in `mod.rs` stay the definition of
//! every record: this writer must produce their bytes exactly, which debug
//! builds check on every record they write (all end-to-end tests, the
//! fuzz targets) and the tests below check on records of every shape.
//! Other kinds, and rare parts (`k8s`, `grpc`), go through `Serialize`.

use super::json::{self, escape_str, write_uint as uint};
use super::{AddrText, Body, ConnView, Grpc, HttpMessage, K8s, Record, NODE};
use crate::protocols::exchange::Exchange;
use crate::protocols::fields::Fields;
use crate::protocols::grpc;
use serde_json::Error;

/// Appends `r` as one line's JSON (no newline); nothing of it when it fails.
pub fn write_record(out: &mut Vec<u8>, r: &Record<'_>) -> Result<(), Error> {
    let start = out.len();
    let result = if matches!(r.body, Body::Http(_) | Body::Data { .. } | Body::Conn(_)) {
        direct(out, r)
    } else {
        json::write(out, r)
    };
    #[cfg(debug_assertions)]
    if result.is_ok() {
        let by_serde = json::to_vec(r).expect("a record the fast writer wrote serialises");
        assert_eq!(
            String::from_utf8_lossy(&out[start..]),
            String::from_utf8_lossy(&by_serde),
            "the fast record writer and the Serialize impls disagree"
        );
    }
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// `r` as JSON.
pub fn record_to_vec(r: &Record<'_>) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(512);
    write_record(&mut out, r)?;
    Ok(out)
}

fn direct(out: &mut Vec<u8>, r: &Record<'_>) -> Result<(), Error> {
    let o = &r.origin;
    out.extend_from_slice(b"{\"kind\":");
    escape_str(out, r.kind());
    out.extend_from_slice(b",\"ts_ns\":");
    uint(out, o.ts_ns);
    out.extend_from_slice(b",\"pid\":");
    uint(out, o.pid.into());
    out.extend_from_slice(b",\"comm\":");
    escape_str(out, o.comm);
    out.extend_from_slice(b",\"source\":");
    escape_str(out, o.source);
    out.extend_from_slice(b",\"probe\":");
    escape_str(out, o.probe);
    if let Some(node) = NODE.get() {
        out.extend_from_slice(b",\"node\":");
        escape_str(out, node);
    }
    out.extend_from_slice(b",\"conn\":");
    match &r.conn {
        Some(c) => conn(out, c),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(pod) = r.conn.and_then(|c| c.k8s) {
        out.extend_from_slice(b",\"k8s\":");
        json::write(out, &K8s(pod, r.conn.and_then(|c| c.peer)))?;
    }
    match r.body {
        Body::Data { direction, seq, payload, truncated, .. } => {
            out.extend_from_slice(b",\"direction\":");
            escape_str(out, direction.as_str());
            out.extend_from_slice(b",\"seq\":");
            uint(out, seq);
            body(out, b",\"payload\":", b",\"payload_b64\":", payload);
            if truncated > 0 {
                out.extend_from_slice(b",\"truncated\":");
                uint(out, truncated.into());
            }
        }
        Body::Conn(event) => {
            out.extend_from_slice(b",\"event\":");
            escape_str(out, event.as_str());
        }
        Body::Http(e) => http(out, e)?,
        // `write_record` sends every other kind to serde.
        _ => unreachable!("the fast writer was given a {} record", r.kind()),
    }
    out.push(b'}');
    Ok(())
}

fn http(out: &mut Vec<u8>, e: &Exchange) -> Result<(), Error> {
    out.extend_from_slice(b",\"protocol\":");
    escape_str(out, e.request.head.protocol());
    out.extend_from_slice(b",\"request\":");
    message(out, &HttpMessage { msg: &e.request, request: true });
    out.extend_from_slice(b",\"response\":");
    match &e.response {
        Some(r) => message(out, &HttpMessage { msg: r, request: false }),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"latency_ns\":");
    match e.latency_ns() {
        Some(ns) => uint(out, ns),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(reset) = e.reset_name() {
        out.extend_from_slice(b",\"reset\":");
        escape_str(out, &reset);
    }
    if grpc::is_grpc(&e.request.head) {
        out.extend_from_slice(b",\"grpc\":");
        json::write(out, &Grpc(e))?;
    }
    Ok(())
}

fn message(out: &mut Vec<u8>, m: &HttpMessage<'_>) {
    let h = &m.msg.head;
    if m.request {
        out.extend_from_slice(b"{\"method\":");
        escape_str(out, &h.method);
        out.extend_from_slice(b",\"path\":");
        escape_str(out, &h.target);
        out.extend_from_slice(b",\"authority\":");
        escape_str(out, h.authority().unwrap_or(""));
    } else {
        out.extend_from_slice(b"{\"status\":");
        uint(out, h.status.into());
        out.extend_from_slice(b",\"reason\":");
        escape_str(out, &h.reason);
    }
    out.extend_from_slice(b",\"headers\":");
    fields(out, &h.headers);
    if h.headers_incomplete {
        out.extend_from_slice(b",\"headers_incomplete\":true");
    }
    if !m.msg.trailers.is_empty() {
        out.extend_from_slice(b",\"trailers\":");
        fields(out, &m.msg.trailers);
    }
    body(out, b",\"body\":", b",\"body_b64\":", &m.msg.body);
    if m.msg.body_truncated > 0 {
        out.extend_from_slice(b",\"body_truncated\":");
        uint(out, m.msg.body_truncated);
    }
    if let Some(e) = &m.msg.decode_error {
        out.extend_from_slice(b",\"body_decode_error\":");
        escape_str(out, e);
    }
    out.push(b'}');
}

/// `[["name","value"],…]`.
fn fields(out: &mut Vec<u8>, f: &Fields) {
    out.push(b'[');
    for (i, (name, value)) in f.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        escape_str(out, name);
        out.push(b',');
        escape_str(out, value);
        out.push(b']');
    }
    out.push(b']');
}

fn conn(out: &mut Vec<u8>, c: &ConnView<'_>) {
    out.extend_from_slice(b"{\"local\":");
    escape_str(out, AddrText::new(&c.local).as_str());
    out.extend_from_slice(b",\"remote\":");
    escape_str(out, AddrText::new(&c.remote).as_str());
    out.extend_from_slice(b",\"role\":");
    escape_str(out, c.role.as_str());
    if c.tls {
        out.extend_from_slice(b",\"tls\":true");
    } else {
        out.extend_from_slice(b",\"tls\":false");
    }
    if let Some(h) = c.remote_host {
        out.extend_from_slice(b",\"remote_host\":");
        escape_str(out, h);
    }
    out.push(b'}');
}

/// A body as text when it is UTF-8 (key `text_key`), else as base64.
/// Inlined: its keys are then constants, copied without a call.
#[inline(always)]
fn body(out: &mut Vec<u8>, text_key: &[u8], b64_key: &[u8], bytes: &[u8]) {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => {
            out.extend_from_slice(text_key);
            escape_str(out, text);
        }
        Err(_) => {
            use base64::Engine;
            out.extend_from_slice(b64_key);
            out.push(b'"');
            let start = out.len();
            let len = base64::encoded_len(bytes.len(), true).expect("a body's base64 fits in memory");
            out.resize(start + len, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, &mut out[start..])
                .expect("room for the whole base64 text");
            out.truncate(start + written);
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ConnChange, Direction, Role};
    use crate::pod::{Peer, PodMeta, PodOf, Workload};
    use crate::protocols::exchange::{Head, Message, Version};
    use crate::record::{DataKind, Origin};
    use std::sync::Arc;

    /// The fast writer's bytes against serde_json's on the same record.
    fn same(r: &Record<'_>) {
        let fast = String::from_utf8(record_to_vec(r).unwrap()).unwrap();
        assert_eq!(fast, serde_json::to_string(r).unwrap());
    }

    fn message(request: bool, body: &[u8], odd: bool) -> Message {
        let long = "v".repeat(40);
        let fields: Vec<(&str, &str)> = if odd {
            vec![("Host", "h\u{e9}\"\\\t.test"), ("X-Long", &long), ("content-type", "application/grpc")]
        } else {
            vec![("Host", "a.test"), ("Content-Length", "3")]
        };
        Message {
            head: Head {
                method: if request { "POST".into() } else { String::new() },
                target: if odd { "/p?q=\"1\"\u{1}".into() } else { "/p".into() },
                status: if request { 0 } else { 503 },
                reason: if odd { "Service \u{7f} Unavailable".into() } else { "OK".into() },
                version: if odd { Version::H2 } else { Version::Http11 },
                headers: fields.into_iter().collect(),
                headers_incomplete: odd && !request,
            },
            body: body.to_vec(),
            body_truncated: if odd { 1 << 40 } else { 0 },
            decode_error: odd.then(|| "gzip: \"bad\" header".into()),
            trailers: if odd { [("grpc-status", "14")].into_iter().collect() } else { Fields::new() },
            start_ts: 100,
            end_ts: 250,
        }
    }

    #[test]
    fn every_shape_is_written_as_serde_writes_it() {
        let pod = PodOf {
            meta: Arc::new(PodMeta {
                pod: "web-1".into(),
                namespace: "shop".into(),
                labels: [("app".to_string(), "web\"x".to_string())].into_iter().collect(),
                workload: Some(Workload { kind: "Deployment".into(), name: "web".into() }),
                uid: "u-1".into(),
            }),
            container: Some("main".into()),
        };
        let peer = Peer::Pod(pod.meta.clone());
        let bodies: [&[u8]; 5] =
            [b"", b"{}", "caf\u{e9} \"q\"\n".as_bytes(), &[0xff, 0xfe, 0], &[b'a'; 3000]];
        let mut conns = Vec::new();
        for (local, remote) in [("127.0.0.1:40000", "10.0.0.255:443"), ("[::1]:5", "[fe80::1%2]:443")] {
            for (role, tls, host, k8s, with_peer) in [
                (Role::Client, true, None, false, false),
                (Role::Server, false, Some("db.\"x\".test"), true, true),
                (Role::Unknown, false, None, true, false),
            ] {
                conns.push(Some(ConnView {
                    id: 1,
                    local: local.parse().unwrap(),
                    remote: remote.parse().unwrap(),
                    role,
                    tls,
                    remote_host: host,
                    k8s: k8s.then_some(&pod),
                    peer: with_peer.then_some(&peer),
                }));
            }
        }
        conns.push(None);
        let origins = [
            Origin { ts_ns: 0, pid: 0, comm: "", source: "kernel", probe: "ringbuf:events" },
            Origin {
                ts_ns: u64::MAX,
                pid: u32::MAX,
                comm: "a\"b\\c\u{1}\u{e9}",
                source: "jvmti",
                probe: "SSLEngine.wrap",
            },
        ];
        let mut exchanges = Vec::new();
        for odd in [false, true] {
            for &b in &bodies {
                for answered in [false, true] {
                    let mut e = Exchange::new(
                        Box::new(message(true, b, odd)),
                        answered.then(|| Box::new(message(false, b, !odd))),
                    );
                    e.reset = odd.then_some(if answered { 8 } else { 0x77 });
                    exchanges.push(e);
                }
            }
        }
        let mut n = 0;
        for conn in &conns {
            for origin in &origins {
                let mut bodies_of = vec![Body::Conn(ConnChange::Open), Body::Conn(ConnChange::Midstream)];
                for &payload in &bodies {
                    for truncated in [0, 9] {
                        for direction in [Direction::Send, Direction::Recv] {
                            bodies_of.push(Body::Data {
                                direction,
                                seq: 1 << 33,
                                payload,
                                truncated,
                                kind: DataKind::Captured,
                            });
                        }
                    }
                }
                bodies_of.extend(exchanges.iter().map(Body::Http));
                for body in bodies_of {
                    same(&Record { origin: *origin, conn: *conn, body });
                    n += 1;
                }
            }
        }
        assert!(n > 500, "{n} records");
    }
}

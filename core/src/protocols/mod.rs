//! Sans-IO protocol parsers (bytes in, events out) and the classification
//! of a connection from its first bytes. Parsers never see sockets, records
//! or probes, so every source (kernel, OpenSSL, Go, JVM) feeds them alike.

pub mod content;
pub mod db;
pub mod exchange;
pub mod fields;
pub mod framing;
pub mod grpc;
pub mod http1;
pub mod http2;
pub mod kafka;
pub mod mongodb;
pub mod mysql;
pub mod pgsql;
pub mod redis;
pub mod spare;

use exchange::{HttpOutput, Limits};
use http1::Http1Session;
use http2::{Http2Session, PREFACE as H2_PREFACE};

/// The HTTP state of one connection, whichever version it speaks; both
/// take each direction's bytes in order and give exchanges.
/// Its owner boxes it whole, so the variants' sizes do not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum HttpSession {
    /// HTTP/1.x.
    H1(Http1Session),
    /// HTTP/2 (with prior knowledge or over TLS).
    H2(Http2Session),
}

impl HttpSession {
    /// HTTP/2 from the client preface on.
    pub fn h2(limits: Limits) -> Self {
        HttpSession::H2(Http2Session::new(limits))
    }

    /// HTTP/2 joined mid-stream.
    pub fn h2_midstream(limits: Limits) -> Self {
        HttpSession::H2(Http2Session::midstream(limits))
    }

    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, data: &[u8], ts: u64, out: &mut Vec<HttpOutput>) {
        match self {
            HttpSession::H1(s) => {
                let from = out.len();
                s.feed(request_side, data, ts, out);
                if let Some(request) = s.take_h2c_upgrade() {
                    let mut h2 = Http2Session::upgraded(s.limits(), request);
                    // What followed the 101 in these bytes is HTTP/2 already.
                    let after: Vec<HttpOutput> = out.drain(from..).collect();
                    for o in after {
                        match o {
                            HttpOutput::Raw(r) => h2.feed(request_side, &data[r], ts, out),
                            other => out.push(other),
                        }
                    }
                    *self = HttpSession::H2(h2);
                }
            }
            HttpSession::H2(s) => s.feed(request_side, data, ts, out),
        }
    }

    /// `len` bytes of a direction went missing at `ts`; true when the
    /// exchange in progress survives (counted in its body).
    pub fn gap(&mut self, request_side: bool, len: u64, ts: u64, out: &mut Vec<HttpOutput>) -> bool {
        match self {
            HttpSession::H1(s) => s.gap(request_side, len, ts, out),
            HttpSession::H2(s) => s.gap(request_side, len, ts, out),
        }
    }

    /// The connection ended.
    pub fn close(&mut self, ts: u64, out: &mut Vec<HttpOutput>) {
        match self {
            HttpSession::H1(s) => s.close(ts, out),
            HttpSession::H2(s) => s.close(ts, out),
        }
    }

    /// True once the request direction is at a known message boundary
    /// (HTTP/2: either direction at a frame boundary).
    pub fn synced(&self) -> bool {
        match self {
            HttpSession::H1(s) => s.synced(),
            HttpSession::H2(s) => s.synced(),
        }
    }
}

/// What the first bytes of a connection say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// An HTTP/1.x request line.
    Http1Request,
    /// An HTTP/1.x status line.
    Http1Response,
    /// The HTTP/2 client preface.
    Http2,
    /// A Redis command (RESP).
    Redis,
    /// A PostgreSQL startup, SSLRequest or CancelRequest.
    Postgres,
    /// A MySQL/MariaDB server's greeting (the server speaks first).
    MysqlGreeting,
    /// A Kafka request header.
    Kafka,
    /// A MongoDB request (its message header and what follows it).
    Mongodb,
    /// Not a protocol we parse.
    Other,
    /// Too few bytes to tell yet.
    NeedMore,
}

const METHODS: &[&[u8]] =
    &[b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

fn prefix_state(data: &[u8], token: &[u8]) -> Option<bool> {
    let n = data.len().min(token.len());
    if data[..n] != token[..n] {
        None
    } else {
        Some(data.len() >= token.len())
    }
}

/// Classifies a connection from the first bytes of one direction.
pub fn classify(first: &[u8]) -> Classification {
    if first.is_empty() {
        return Classification::NeedMore;
    }
    let mut need_more = false;
    match prefix_state(first, H2_PREFACE) {
        Some(true) => return Classification::Http2,
        Some(false) => need_more = true,
        None => {}
    }
    for m in METHODS {
        match prefix_state(first, m) {
            Some(true) if first.len() > m.len() => return Classification::Http1Request,
            Some(_) => need_more = true,
            None => {}
        }
    }
    match prefix_state(first, b"HTTP/1.") {
        Some(true) => return Classification::Http1Response,
        Some(false) => need_more = true,
        None => {}
    }
    match pgsql::classify(first) {
        Some(true) => return Classification::Postgres,
        None => need_more = true,
        Some(false) => {}
    }
    match mysql::classify(first) {
        Some(true) => return Classification::MysqlGreeting,
        None => need_more = true,
        Some(false) => {}
    }
    match redis::classify(first) {
        Some(true) => return Classification::Redis,
        None => need_more = true,
        Some(false) => {}
    }
    // After PostgreSQL: its startup message reads as a Metadata v0 header.
    match kafka::classify(first) {
        Some(true) => return Classification::Kafka,
        None => need_more = true,
        Some(false) => {}
    }
    match mongodb::classify(first) {
        Some(true) => return Classification::Mongodb,
        None => need_more = true,
        Some(false) => {}
    }
    // An HTTP/2 server may speak first (its SETTINGS frame, as Go's does):
    // the client's preface in the other direction will decide.
    if first.len() >= 9 && first[3] == 4 && first[4] & !1 == 0 && first[5..9] == [0; 4] {
        let len = usize::from(first[0]) << 16 | usize::from(first[1]) << 8 | usize::from(first[2]);
        if len % 6 == 0 {
            need_more = true;
        }
    }
    if need_more {
        Classification::NeedMore
    } else {
        Classification::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_from_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Classification::Http1Request);
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n"), Classification::Http1Response);
        assert_eq!(classify(H2_PREFACE), Classification::Http2);
        assert_eq!(classify(b"G"), Classification::NeedMore);
        assert_eq!(classify(b"GET "), Classification::NeedMore);
        assert_eq!(classify(b"PRI * HT"), Classification::NeedMore);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Classification::Other);
        assert_eq!(classify(b"GETX / HTTP/1.1"), Classification::Other);
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Classification::Other);
        // A server's SETTINGS frame first: wait for the client's side.
        assert_eq!(
            classify(&[0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0]),
            Classification::NeedMore
        );
        assert_eq!(classify(&[0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]), Classification::Other);
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Classification::Redis);
        assert_eq!(classify(b"*1\r\n$4\r\nPI"), Classification::NeedMore);
    }

    #[test]
    fn an_h2c_upgrade_continues_as_http2_with_the_request_on_stream_1() {
        use exchange::Version;
        use http2::{flag, kind, test_frame as frame};
        let mut session = HttpSession::H1(Http1Session::new(Limits::default()));
        let mut out = Vec::new();
        let req = b"POST /up HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\nhi";
        session.feed(true, req, 1, &mut out);
        let mut enc = loona_hpack::Encoder::new();
        let mut resp =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
        resp.extend(frame(kind::SETTINGS, 0, 0, &[]));
        let status: &[(&[u8], &[u8])] = &[(b":status", b"200")];
        resp.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &enc.encode(status.iter().copied())));
        session.feed(false, &resp, 2, &mut out);
        assert!(matches!(session, HttpSession::H2(_)));
        assert!(out.is_empty(), "the 101 is not the answer: {out:?}");
        let mut client = H2_PREFACE.to_vec();
        client.extend(frame(kind::SETTINGS, 0, 0, &[]));
        session.feed(true, &client, 3, &mut out);
        session.feed(false, &frame(kind::DATA, flag::END_STREAM, 1, b"over h2"), 4, &mut out);
        let [HttpOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
        assert_eq!((e.request.head.method.as_str(), e.request.head.target.as_str()), ("POST", "/up"));
        assert_eq!((e.request.body.as_slice(), e.request.head.authority()), (&b"hi"[..], Some("h.test")));
        let r = e.response.as_ref().unwrap();
        assert_eq!((r.head.status, r.body.as_slice(), r.head.version), (200, &b"over h2"[..], Version::H2));
        assert_eq!(e.latency_ns(), Some(3));
    }
}

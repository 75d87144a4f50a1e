//! The records of CONTRACT.md, serialised straight from borrowed event data
//! (addresses and base64 are formatted into the output, never into a String).

use crate::dns::{rcode_name, Answer, AnswerData, DnsMessage};
use crate::events::{ConnChange, Direction, Role};
use crate::pod::{Peer, PodOf};
use crate::protocols::db::DbExchange;
use crate::protocols::exchange::{Exchange, Message};
use crate::protocols::grpc;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::net::SocketAddr;

mod db;
mod fast;
mod har;
pub mod json;
mod jsonl;
mod kafka;
mod mongodb;

pub use db::json as db_json;
pub use fast::{record_to_vec, write_record};
pub use har::{entry as har_entry, rfc3339};
pub use jsonl::{in_jsonl, JsonlWriter};

/// The `node` every record names (CONTRACT.md: the Kubernetes node name,
/// else the host name): one value for the whole process, set once at start
/// by the program that writes records.
static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the `node` of every record from now on (the first call wins).
pub fn set_node(name: &str) {
    let _ = NODE.set(name.to_string());
}

/// The `node` set by `set_node`, if it was.
pub fn node() -> Option<&'static str> {
    NODE.get().map(String::as_str)
}

/// The `conn` object.
#[derive(Debug, Clone, Copy)]
pub struct ConnView<'a> {
    /// The sensor's id of the connection (not written: records name a
    /// connection by its endpoints); sinks key per-connection state by it.
    pub id: u64,
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// Role.
    pub role: Role,
    /// Whether the bytes are TLS plaintext.
    pub tls: bool,
    /// The name looked up for the remote address, when known (DNS).
    pub remote_host: Option<&'a str>,
    /// The local process's pod (Kubernetes mode), written as the record's `k8s`.
    pub k8s: Option<&'a PodOf>,
    /// The remote address's pod or Service, written as `k8s.peer` (with `k8s`).
    pub peer: Option<&'a Peer>,
}

impl Serialize for ConnView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("local", AddrText::new(&self.local).as_str())?;
        m.serialize_entry("remote", AddrText::new(&self.remote).as_str())?;
        m.serialize_entry("role", self.role.as_str())?;
        m.serialize_entry("tls", &self.tls)?;
        if let Some(h) = self.remote_host {
            m.serialize_entry("remote_host", h)?;
        }
        m.end()
    }
}

/// `k8s`: `{pod, namespace, labels, workload: {kind, name}, uid, container}`
/// and, when the remote address is a pod or Service of the cluster, `peer`:
/// `{pod, namespace, labels, workload, uid}` or `{service, namespace,
/// labels}` (also a HAR entry's `_k8s`).
pub struct K8s<'a>(pub &'a PodOf, pub Option<&'a Peer>);

impl Serialize for K8s<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.0.meta;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("pod", &p.pod)?;
        m.serialize_entry("namespace", &p.namespace)?;
        m.serialize_entry("labels", &p.labels)?;
        m.serialize_entry("workload", &p.workload)?;
        m.serialize_entry("uid", &p.uid)?;
        m.serialize_entry("container", &self.0.container.as_deref())?;
        if let Some(peer) = self.1 {
            m.serialize_entry("peer", &PeerView(peer))?;
        }
        m.end()
    }
}

/// `k8s.peer`.
struct PeerView<'a>(&'a Peer);

impl Serialize for PeerView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Peer::Pod(p) => {
                let mut m = s.serialize_map(Some(5))?;
                m.serialize_entry("pod", &p.pod)?;
                m.serialize_entry("namespace", &p.namespace)?;
                m.serialize_entry("labels", &p.labels)?;
                m.serialize_entry("workload", &p.workload)?;
                m.serialize_entry("uid", &p.uid)?;
                m.end()
            }
            Peer::Service(svc) => svc.serialize(s),
        }
    }
}

struct Display<'a, T: std::fmt::Display>(&'a T);

/// An endpoint as `Display` writes it (`ip:port`, IPv6 in brackets), put
/// together without `fmt` for IPv4: every record has two, and formatting
/// was a twentieth of the sensor's time per record.
struct AddrText {
    buf: [u8; 64],
    len: usize,
}

/// Each octet's decimal digits (padded to three) and their count.
const OCTETS: [(u8, [u8; 3]); 256] = {
    let mut t = [(0u8, [0u8; 3]); 256];
    let mut v = 0;
    while v < 256 {
        let (h, d, u) = ((v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8);
        t[v] = match v {
            0..=9 => (1, [b'0' + u, 0, 0]),
            10..=99 => (2, [b'0' + d, b'0' + u, 0]),
            _ => (3, [b'0' + h, b'0' + d, b'0' + u]),
        };
        v += 1;
    }
    t
};

impl AddrText {
    fn new(a: &SocketAddr) -> AddrText {
        let mut t = AddrText { buf: [0; 64], len: 0 };
        match a {
            SocketAddr::V4(v4) => {
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    let (len, digits) = OCTETS[usize::from(octet)];
                    t.buf[t.len..t.len + 3].copy_from_slice(&digits);
                    t.len += usize::from(len);
                }
                t.push(b':');
                let mut num = itoa::Buffer::new();
                for &d in num.format(v4.port()).as_bytes() {
                    t.push(d);
                }
            }
            SocketAddr::V6(_) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut t.buf[..]);
                // The longest (a scope id and an embedded IPv4) is under 64 bytes.
                let _ = write!(cursor, "{a}");
                t.len = cursor.position() as usize;
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        let text = &self.buf[..self.len];
        debug_assert!(text.is_ascii());
        // SAFETY: only ASCII is ever written to `buf` (digits, dots and a
        // colon above; `SocketAddrV6`'s Display writes hex, colons, brackets,
        // dots, digits and `%`), so `text` is UTF-8. Checking it cost as much
        // as writing it.
        unsafe { std::str::from_utf8_unchecked(text) }
    }
}

impl<T: std::fmt::Display> Serialize for Display<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// A `drop` record's own fields.
#[derive(Debug, Clone, Copy)]
pub struct DropRecord {
    /// Events lost.
    pub count: u64,
    /// Payload bytes lost.
    pub bytes: u64,
    /// Why.
    pub reason: &'static str,
}

/// Fields every record carries: who, when, and which probe.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// CLOCK_REALTIME ns.
    pub ts_ns: u64,
    /// Process (0 for sensor-wide records).
    pub pid: u32,
    /// Process name.
    pub comm: &'a str,
    /// Probe family: `kernel`, `openssl`, `go-tls`, `jvmti`.
    pub source: &'static str,
    /// The concrete hook.
    pub probe: &'static str,
}

/// Which bytes a `data` record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A chunk as a probe captured it (`--raw` writes these).
    Captured,
    /// Bytes of the connection's stream, in order, that no protocol parser
    /// took (written without `--raw`).
    Unparsed,
}

/// What a record says beyond its origin and connection.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// A chunk of payload.
    Data {
        /// Send or recv.
        direction: Direction,
        /// Offset in this direction.
        seq: u64,
        /// Captured bytes.
        payload: &'a [u8],
        /// Bytes not captured.
        truncated: u32,
        /// Captured chunk or unparsed stream bytes.
        kind: DataKind,
    },
    /// A lifecycle event.
    Conn(ConnChange),
    /// Something the sensor could not keep.
    Drop(DropRecord),
    /// An HTTP/1.x request and its response.
    Http(&'a Exchange),
    /// A DNS message (query or answer) and which way it went.
    Dns(&'a DnsMessage, Direction),
    /// A database or queue exchange (`redis`, …).
    Db(&'a DbExchange),
}

/// One output record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Who, when, which probe.
    pub origin: Origin<'a>,
    /// The connection; `None` for sensor-wide records (`drop`).
    pub conn: Option<ConnView<'a>>,
    /// The kind and its fields.
    pub body: Body<'a>,
}

impl Record<'_> {
    /// The record's `kind` (CONTRACT.md).
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Data { .. } => "data",
            Body::Conn(_) => "conn",
            Body::Drop(_) => "drop",
            Body::Http(_) => "http",
            Body::Dns(..) => "dns",
            Body::Db(e) => e.kind(),
        }
    }
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.kind();
        let o = &self.origin;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", kind)?;
        m.serialize_entry("ts_ns", &o.ts_ns)?;
        m.serialize_entry("pid", &o.pid)?;
        m.serialize_entry("comm", o.comm)?;
        m.serialize_entry("source", o.source)?;
        m.serialize_entry("probe", o.probe)?;
        if let Some(node) = NODE.get() {
            m.serialize_entry("node", node)?;
        }
        m.serialize_entry("conn", &self.conn)?;
        if let Some(pod) = self.conn.and_then(|c| c.k8s) {
            m.serialize_entry("k8s", &K8s(pod, self.conn.and_then(|c| c.peer)))?;
        }
        match self.body {
            Body::Data { direction, seq, payload, truncated, .. } => {
                m.serialize_entry("direction", direction.as_str())?;
                m.serialize_entry("seq", &seq)?;
                body_entry(&mut m, "payload", "payload_b64", payload)?;
                if truncated > 0 {
                    m.serialize_entry("truncated", &truncated)?;
                }
            }
            Body::Conn(event) => m.serialize_entry("event", event.as_str())?,
            Body::Drop(d) => {
                m.serialize_entry("count", &d.count)?;
                m.serialize_entry("bytes", &d.bytes)?;
                m.serialize_entry("reason", d.reason)?;
            }
            Body::Dns(d, direction) => {
                m.serialize_entry("direction", direction.as_str())?;
                m.serialize_entry("id", &d.id)?;
                m.serialize_entry("response", &d.response)?;
                m.serialize_entry("query", &d.questions.first().map(|(n, _)| n))?;
                m.serialize_entry("qtype", &d.questions.first().map(|(_, t)| t))?;
                let addrs = d.answers.iter().filter_map(|a| match &a.data {
                    AnswerData::Addr(ip) => Some(Display(ip)),
                    _ => None,
                });
                m.serialize_entry("answers", &Seq(addrs))?;
                m.serialize_entry("records", &Seq(d.answers.iter().map(AnswerView)))?;
                m.serialize_entry("rcode", &rcode_name(d.rcode))?;
            }
            Body::Db(e) => db::fields(&mut m, e)?,
            Body::Http(e) => {
                m.serialize_entry("protocol", e.request.head.protocol())?;
                m.serialize_entry("request", &HttpMessage { msg: &e.request, request: true })?;
                m.serialize_entry(
                    "response",
                    &e.response.as_ref().map(|r| HttpMessage { msg: r, request: false }),
                )?;
                m.serialize_entry("latency_ns", &e.latency_ns())?;
                if let Some(reset) = e.reset_name() {
                    m.serialize_entry("reset", &reset)?;
                }
                if grpc::is_grpc(&e.request.head) {
                    m.serialize_entry("grpc", &Grpc(e))?;
                }
            }
        }
        m.end()
    }
}

/// A gRPC call's `{service, method, status, message, request_messages,
/// response_messages}`; messages as text when UTF-8, else base64
/// (`{"b64": …}`), with `compressed` when they were.
struct Grpc<'a>(&'a Exchange);

struct GrpcMessages<'a>(Option<&'a Message>);

impl Serialize for GrpcMessages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let messages = self.0.map(grpc::app_messages).unwrap_or_default();
        s.collect_seq(messages.into_iter().map(|g| {
            let mut v = serde_json::Map::new();
            match std::str::from_utf8(&g.data) {
                Ok(t) => v.insert("text".into(), t.into()),
                Err(_) => v.insert(
                    "b64".into(),
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &g.data).into(),
                ),
            };
            if g.compressed {
                v.insert("compressed".into(), true.into());
            }
            if let Some(e) = g.decode_error {
                v.insert("decode_error".into(), e.into());
            }
            v
        }))
    }
}

impl Serialize for Grpc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        let (service, method) = grpc::service_method(&e.request.head.target).unwrap_or(("", ""));
        m.serialize_entry("service", service)?;
        m.serialize_entry("method", method)?;
        let status = grpc::status(e);
        m.serialize_entry("status", &status.map(|(c, _)| c))?;
        m.serialize_entry("message", &status.and_then(|(_, msg)| msg))?;
        m.serialize_entry("request_messages", &GrpcMessages(Some(&e.request)))?;
        m.serialize_entry("response_messages", &GrpcMessages(e.response.as_deref()))?;
        m.end()
    }
}

/// An iterator written as a JSON array, without collecting it.
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// One answer record: `{name, ttl, type, data}`.
struct AnswerView<'a>(&'a Answer);

impl Serialize for AnswerView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("name", &a.name)?;
        m.serialize_entry("ttl", &a.ttl)?;
        match &a.data {
            AnswerData::Addr(ip) => {
                m.serialize_entry("type", if ip.is_ipv4() { "A" } else { "AAAA" })?;
                m.serialize_entry("data", &Display(ip))?;
            }
            AnswerData::Cname(target) => {
                m.serialize_entry("type", "CNAME")?;
                m.serialize_entry("data", target)?;
            }
            AnswerData::Other(kind) => {
                m.serialize_entry("type", kind)?;
                m.serialize_entry("data", &None::<()>)?;
            }
        }
        m.end()
    }
}

/// A body as text when it is UTF-8, else as base64.
fn body_entry<M: SerializeMap>(
    m: &mut M,
    text_key: &str,
    b64_key: &str,
    bytes: &[u8],
) -> Result<(), M::Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => m.serialize_entry(text_key, text),
        Err(_) => m.serialize_entry(
            b64_key,
            &Display(&base64::display::Base64Display::new(bytes, &base64::engine::general_purpose::STANDARD)),
        ),
    }
}

struct HttpMessage<'a> {
    msg: &'a Message,
    request: bool,
}

impl Serialize for HttpMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = &self.msg.head;
        let mut m = s.serialize_map(None)?;
        if self.request {
            m.serialize_entry("method", &h.method)?;
            m.serialize_entry("path", &h.target)?;
            m.serialize_entry("authority", h.authority().unwrap_or(""))?;
        } else {
            m.serialize_entry("status", &h.status)?;
            m.serialize_entry("reason", &h.reason)?;
        }
        m.serialize_entry("headers", &h.headers)?;
        if h.headers_incomplete {
            m.serialize_entry("headers_incomplete", &true)?;
        }
        if !self.msg.trailers.is_empty() {
            m.serialize_entry("trailers", &self.msg.trailers)?;
        }
        body_entry(&mut m, "body", "body_b64", &self.msg.body)?;
        if self.msg.body_truncated > 0 {
            m.serialize_entry("body_truncated", &self.msg.body_truncated)?;
        }
        if let Some(e) = &self.msg.decode_error {
            m.serialize_entry("body_decode_error", e)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::fields::Fields;

    #[test]
    fn endpoints_read_as_display_writes_them() {
        let longest = std::net::SocketAddrV6::new(
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap(),
            65535,
            0,
            u32::MAX,
        );
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:40000",
            "255.255.255.255:65535",
            "10.20.3.4:5",
            "[::1]:80",
            "[fe80::1%2]:443",
            "[::ffff:10.0.0.1]:8080",
        ]
        .into_iter()
        .map(|a| a.parse::<SocketAddr>().unwrap())
        .chain([SocketAddr::V6(longest)])
        {
            assert_eq!(AddrText::new(&a).as_str(), a.to_string());
        }
    }
    use serde_json::{json, Value};

    fn conn() -> ConnView<'static> {
        ConnView {
            id: 1,
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "[::1]:80".parse().unwrap(),
            role: Role::Client,
            tls: false,
            remote_host: None,
            k8s: None,
            peer: None,
        }
    }

    fn origin(pid: u32) -> Origin<'static> {
        Origin { ts_ns: 5, pid, comm: "curl", source: "kernel", probe: "tracepoint:syscalls:sys_exit_write" }
    }

    fn data(payload: &[u8], truncated: u32) -> Value {
        let r = Record {
            origin: origin(7),
            conn: Some(conn()),
            body: Body::Data {
                direction: Direction::Send,
                seq: 10,
                payload,
                truncated,
                kind: DataKind::Captured,
            },
        };
        value(&r)
    }

    /// The record as JSON, after checking that the record writers (the
    /// serializer and the fast writer) write the same bytes as serde_json.
    fn value(r: &Record<'_>) -> Value {
        let reference = serde_json::to_string(r).unwrap();
        assert_eq!(String::from_utf8(json::to_vec(r).unwrap()).unwrap(), reference);
        assert_eq!(String::from_utf8(record_to_vec(r).unwrap()).unwrap(), reference);
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn text_payload_is_written_as_text() {
        assert_eq!(
            data(b"GET / HTTP/1.1\r\n", 0),
            json!({"kind": "data", "ts_ns": 5, "pid": 7, "comm": "curl", "source": "kernel",
                   "probe": "tracepoint:syscalls:sys_exit_write",
                   "conn": {"local": "127.0.0.1:40000", "remote": "[::1]:80", "role": "client", "tls": false},
                   "direction": "send", "seq": 10, "payload": "GET / HTTP/1.1\r\n"})
        );
    }

    #[test]
    fn binary_payload_is_base64_and_truncation_is_said() {
        let v = data(&[0xff, 0x00, 0x80], 4);
        assert_eq!(v["payload_b64"], "/wCA");
        assert!(v.get("payload").is_none());
        assert_eq!(v["truncated"], 4);
    }

    #[test]
    fn http_record_has_both_halves() {
        use crate::protocols::exchange::{Head, Message, Version};
        let e = Exchange {
            reset: None,
            request: Box::new(Message {
                head: Head {
                    method: "POST".into(),
                    target: "/p?q=1".into(),
                    version: Version::Http11,
                    headers: Fields::from_iter([("Host", "a.test")]),
                    ..Head::default()
                },
                body: b"{}".to_vec(),
                start_ts: 100,
                end_ts: 110,
                ..Message::default()
            }),
            response: Some(Box::new(Message {
                head: Head { status: 200, reason: "OK".into(), version: Version::Http11, ..Head::default() },
                body: vec![0xff, 0xfe],
                body_truncated: 7,
                end_ts: 150,
                ..Message::default()
            })),
        };
        let r = Record { origin: origin(3), conn: Some(conn()), body: Body::Http(&e) };
        let v = value(&r);
        assert_eq!(v["kind"], "http");
        assert_eq!(v["protocol"], "http/1.1");
        assert_eq!(
            v["request"],
            json!({"method": "POST", "path": "/p?q=1", "authority": "a.test", "headers": [["Host", "a.test"]], "body": "{}"})
        );
        assert_eq!(v["response"]["status"], 200);
        assert_eq!(v["response"]["body_b64"], "//4=");
        assert_eq!(v["response"]["body_truncated"], 7);
        assert_eq!(v["latency_ns"], 50);
        let unanswered = Exchange::new(e.request.clone(), None);
        let v = value(&Record { origin: origin(3), conn: Some(conn()), body: Body::Http(&unanswered) });
        assert!(v["response"].is_null() && v["latency_ns"].is_null());
    }

    #[test]
    fn h2_records_carry_trailers_resets_and_incomplete_headers() {
        use crate::protocols::exchange::{Head, Message, Version};
        let head = |fields: &[(&str, &str)]| Head {
            version: Version::H2,
            headers: fields.iter().copied().collect(),
            ..Head::default()
        };
        let e = Exchange {
            request: Box::new(Message {
                head: Head {
                    method: "POST".into(),
                    target: "/s.S/M".into(),
                    ..head(&[(":authority", "g:1")])
                },
                ..Message::default()
            }),
            response: Some(Box::new(Message {
                head: Head { status: 200, headers_incomplete: true, ..head(&[(":status", "200")]) },
                trailers: Fields::from_iter([("grpc-status", "0")]),
                ..Message::default()
            })),
            reset: Some(8),
        };
        let v = value(&Record { origin: origin(3), conn: Some(conn()), body: Body::Http(&e) });
        assert_eq!(v["protocol"], "h2");
        assert_eq!(v["request"]["authority"], "g:1");
        assert!(v["request"].get("trailers").is_none() && v["request"].get("headers_incomplete").is_none());
        assert_eq!(v["response"]["trailers"], json!([["grpc-status", "0"]]));
        assert_eq!(v["response"]["headers_incomplete"], true);
        assert_eq!(v["reset"], "CANCEL");
    }

    #[test]
    fn conn_and_drop_records() {
        let c = Record { origin: origin(2), conn: Some(conn()), body: Body::Conn(ConnChange::Midstream) };
        let v = value(&c);
        assert_eq!(v["kind"], "conn");
        assert_eq!(v["event"], "midstream");
        let d = Record {
            origin: Origin { pid: 0, comm: "", probe: "ringbuf:events", ..origin(0) },
            conn: None,
            body: Body::Drop(DropRecord { count: 3, bytes: 4096, reason: "ringbuf_full" }),
        };
        let v = value(&d);
        assert_eq!(
            (v["kind"].clone(), v["count"].clone(), v["bytes"].clone()),
            (json!("drop"), json!(3), json!(4096))
        );
        assert_eq!(v["reason"], "ringbuf_full");
        assert!(v["conn"].is_null());
    }

    #[test]
    fn dns_records_and_remote_host() {
        let bytes = {
            use hickory_proto::op::{Message, MessageType, Query};
            use hickory_proto::rr::rdata::{A, CNAME};
            use hickory_proto::rr::{Name, RData, Record as Rr, RecordType};
            use std::str::FromStr;
            let mut m = Message::new();
            m.set_id(9).set_message_type(MessageType::Response);
            m.add_query(Query::query(Name::from_str("www.example.test.").unwrap(), RecordType::A));
            let alias = Name::from_str("api.example.test.").unwrap();
            m.add_answer(Rr::from_rdata(
                Name::from_str("www.example.test.").unwrap(),
                60,
                RData::CNAME(CNAME(alias.clone())),
            ));
            m.add_answer(Rr::from_rdata(alias, 30, RData::A(A::new(10, 0, 0, 2))));
            m.to_vec().unwrap()
        };
        let msg = crate::dns::parse(&bytes).unwrap();
        let mut c = conn();
        c.remote_host = Some("www.example.test");
        let v = serde_json::to_value(Record {
            origin: origin(7),
            conn: Some(c),
            body: Body::Dns(&msg, Direction::Recv),
        })
        .unwrap();
        assert_eq!(v["kind"], "dns");
        assert_eq!(v["conn"]["remote_host"], "www.example.test");
        assert_eq!(v["query"], "www.example.test");
        assert_eq!(v["qtype"], "A");
        assert_eq!(v["answers"], json!(["10.0.0.2"]));
        assert_eq!(v["rcode"], "NOERROR");
        assert_eq!(
            v["records"][0],
            json!({"name": "www.example.test", "ttl": 60, "type": "CNAME", "data": "api.example.test"})
        );
        let v = serde_json::to_value(Record {
            origin: origin(7),
            conn: Some(conn()),
            body: Body::Conn(ConnChange::Open),
        })
        .unwrap();
        assert!(v["conn"].get("remote_host").is_none(), "absent when unknown");
    }
}

//! The records of CONTRACT.md, serialised straight from borrowed event data
//! (addresses and base64 are formatted into the output, never into a String).

use crate::events::{ConnChange, Direction, Role};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::net::SocketAddr;

/// The `conn` object.
#[derive(Debug, Clone, Copy)]
pub struct ConnView {
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// Role.
    pub role: Role,
    /// Whether the bytes are TLS plaintext.
    pub tls: bool,
}

impl Serialize for ConnView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("local", &Display(&self.local))?;
        m.serialize_entry("remote", &Display(&self.remote))?;
        m.serialize_entry("role", self.role.as_str())?;
        m.serialize_entry("tls", &self.tls)?;
        m.end()
    }
}

struct Display<'a, T: std::fmt::Display>(&'a T);

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
    },
    /// A lifecycle event.
    Conn(ConnChange),
    /// Something the sensor could not keep.
    Drop(DropRecord),
}

/// One output record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Who, when, which probe.
    pub origin: Origin<'a>,
    /// The connection; `None` for sensor-wide records (`drop`).
    pub conn: Option<ConnView>,
    /// The kind and its fields.
    pub body: Body<'a>,
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = match self.body {
            Body::Data { .. } => "data",
            Body::Conn(_) => "conn",
            Body::Drop(_) => "drop",
        };
        let o = &self.origin;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", kind)?;
        m.serialize_entry("ts_ns", &o.ts_ns)?;
        m.serialize_entry("pid", &o.pid)?;
        m.serialize_entry("comm", o.comm)?;
        m.serialize_entry("source", o.source)?;
        m.serialize_entry("probe", o.probe)?;
        m.serialize_entry("conn", &self.conn)?;
        match self.body {
            Body::Data { direction, seq, payload, truncated } => {
                m.serialize_entry("direction", direction.as_str())?;
                m.serialize_entry("seq", &seq)?;
                match std::str::from_utf8(payload) {
                    Ok(text) => m.serialize_entry("payload", text)?,
                    Err(_) => m.serialize_entry(
                        "payload_b64",
                        &Display(&base64::display::Base64Display::new(
                            payload,
                            &base64::engine::general_purpose::STANDARD,
                        )),
                    )?,
                }
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
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn conn() -> ConnView {
        ConnView {
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "[::1]:80".parse().unwrap(),
            role: Role::Client,
            tls: false,
        }
    }

    fn origin(pid: u32) -> Origin<'static> {
        Origin { ts_ns: 5, pid, comm: "curl", source: "kernel", probe: "tracepoint:syscalls:sys_exit_write" }
    }

    fn data(payload: &[u8], truncated: u32) -> Value {
        let r = Record {
            origin: origin(7),
            conn: Some(conn()),
            body: Body::Data { direction: Direction::Send, seq: 10, payload, truncated },
        };
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
    fn conn_and_drop_records() {
        let c = Record { origin: origin(2), conn: Some(conn()), body: Body::Conn(ConnChange::Midstream) };
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["kind"], "conn");
        assert_eq!(v["event"], "midstream");
        let d = Record {
            origin: Origin { pid: 0, comm: "", probe: "ringbuf:events", ..origin(0) },
            conn: None,
            body: Body::Drop(DropRecord { count: 3, bytes: 4096, reason: "ringbuf_full" }),
        };
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(
            (v["kind"].clone(), v["count"].clone(), v["bytes"].clone()),
            (json!("drop"), json!(3), json!(4096))
        );
        assert_eq!(v["reason"], "ringbuf_full");
        assert!(v["conn"].is_null());
    }
}

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

/// One output record.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// A chunk of payload.
    Data {
        /// CLOCK_REALTIME ns.
        ts_ns: u64,
        /// Process.
        pid: u32,
        /// Process name.
        comm: &'a str,
        /// Probe family.
        source: &'static str,
        /// Concrete hook.
        probe: &'static str,
        /// Connection.
        conn: ConnView,
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
    Conn {
        /// CLOCK_REALTIME ns.
        ts_ns: u64,
        /// Process.
        pid: u32,
        /// Process name.
        comm: &'a str,
        /// Probe family.
        source: &'static str,
        /// Concrete hook.
        probe: &'static str,
        /// Connection.
        conn: ConnView,
        /// What happened.
        event: ConnChange,
    },
    /// Something the sensor could not keep.
    Drop {
        /// CLOCK_REALTIME ns.
        ts_ns: u64,
        /// Probe family.
        source: &'static str,
        /// Where it was lost.
        probe: &'static str,
        /// Counts.
        drop: DropRecord,
    },
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match *self {
            Record::Data { ts_ns, pid, comm, source, probe, conn, direction, seq, payload, truncated } => {
                common(&mut m, "data", ts_ns, pid, comm, source, probe)?;
                m.serialize_entry("conn", &conn)?;
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
            Record::Conn { ts_ns, pid, comm, source, probe, conn, event } => {
                common(&mut m, "conn", ts_ns, pid, comm, source, probe)?;
                m.serialize_entry("conn", &conn)?;
                m.serialize_entry("event", event.as_str())?;
            }
            Record::Drop { ts_ns, source, probe, drop } => {
                // Aggregate over the whole sensor: no single process or connection.
                common(&mut m, "drop", ts_ns, 0, "", source, probe)?;
                m.serialize_entry("conn", &())?;
                m.serialize_entry("count", &drop.count)?;
                m.serialize_entry("bytes", &drop.bytes)?;
                m.serialize_entry("reason", drop.reason)?;
            }
        }
        m.end()
    }
}

fn common<M: SerializeMap>(
    m: &mut M,
    kind: &str,
    ts_ns: u64,
    pid: u32,
    comm: &str,
    source: &str,
    probe: &str,
) -> Result<(), M::Error> {
    m.serialize_entry("kind", kind)?;
    m.serialize_entry("ts_ns", &ts_ns)?;
    m.serialize_entry("pid", &pid)?;
    m.serialize_entry("comm", comm)?;
    m.serialize_entry("source", source)?;
    m.serialize_entry("probe", probe)
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

    fn data(payload: &[u8], truncated: u32) -> Value {
        let r = Record::Data {
            ts_ns: 5,
            pid: 7,
            comm: "curl",
            source: "kernel",
            probe: "tracepoint:syscalls:sys_exit_write",
            conn: conn(),
            direction: Direction::Send,
            seq: 10,
            payload,
            truncated,
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
        let c = Record::Conn {
            ts_ns: 1,
            pid: 2,
            comm: "x",
            source: "kernel",
            probe: "p",
            conn: conn(),
            event: ConnChange::Midstream,
        };
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["kind"], "conn");
        assert_eq!(v["event"], "midstream");
        let d = Record::Drop {
            ts_ns: 1,
            source: "kernel",
            probe: "ringbuf:events",
            drop: DropRecord { count: 3, bytes: 4096, reason: "ringbuf_full" },
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

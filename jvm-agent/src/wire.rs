//! An `AgentFrame` carrying `AgentData`, written straight into the queue's
//! buffer: prost's messages own their bytes (a `Vec` per payload and per
//! address), and a chunk is queued on an application thread, so the frame is
//! put together here field by field with prost's wire helpers instead. The
//! tests hold it to prost's own encoding of the same message.

use crate::sender::{ConnKey, Ip};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// An `AgentConn` is at most this long (two 16-byte endpoints and the scalars).
const CONN_MAX: usize = 128;

/// proto3 leaves fields at their default out.
fn put_uint(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

fn put_endpoint(tag: u32, ip: &Ip, port: u16, out: &mut Vec<u8>) {
    if ip.is_empty() {
        return; // unknown: the field is absent
    }
    let ip = ip.bytes();
    let port_len = if port == 0 { 0 } else { 1 + encoded_len_varint(port.into()) };
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint((1 + 1 + ip.len() + port_len) as u64, out);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(ip.len() as u64, out);
    out.extend_from_slice(ip);
    put_uint(2, port.into(), out);
}

/// The `AgentConn` message of `conn` (its fd is unknown: -1).
fn conn_message(conn: &ConnKey, role: i32, out: &mut Vec<u8>) {
    put_endpoint(1, &conn.local_ip, conn.local_port, out);
    put_endpoint(2, &conn.remote_ip, conn.remote_port, out);
    put_uint(3, role as i64 as u64, out);
    put_uint(4, -1i64 as u64, out); // int32 -1, sign-extended as protobuf has it
    put_uint(5, conn.object_id, out);
    put_uint(6, conn.peer_port.into(), out);
}

/// The fields of one data frame other than its payload.
#[derive(Debug, Clone, Copy)]
pub struct DataHead<'a> {
    /// Connection.
    pub conn: &'a ConnKey,
    /// `pb::Role`.
    pub role: i32,
    /// `pb::Direction`.
    pub direction: i32,
    /// `pb::AgentHook`.
    pub hook: i32,
    /// Offset of the payload's first byte in its direction.
    pub seq: u64,
    /// CLOCK_BOOTTIME, ns.
    pub ts_boot_ns: u64,
    /// Thread id.
    pub tid: u64,
}

/// Appends the body (no length prefix) of an `AgentFrame` whose kind is
/// `data`: `head` and `payload`. `scratch` is a reusable buffer for the
/// nested connection message.
pub fn put_data_frame(head: &DataHead<'_>, payload: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    conn_message(head.conn, head.role, scratch);
    debug_assert!(scratch.len() <= CONN_MAX);
    let scalars = [
        (2, head.direction as i64 as u64),
        (3, head.hook as i64 as u64),
        (4, head.seq),
        (5, head.ts_boot_ns),
        (6, head.tid),
    ];
    let scalars_len: usize =
        scalars.iter().filter(|(_, v)| *v != 0).map(|(_, v)| 1 + encoded_len_varint(*v)).sum();
    let payload_len =
        if payload.is_empty() { 0 } else { 1 + encoded_len_varint(payload.len() as u64) + payload.len() };
    let data_len = 1 + encoded_len_varint(scratch.len() as u64) + scratch.len() + scalars_len + payload_len;
    out.reserve(1 + encoded_len_varint(data_len as u64) + data_len);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(data_len as u64, out);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(scratch.len() as u64, out);
    out.extend_from_slice(scratch);
    for (tag, v) in scalars {
        put_uint(tag, v, out);
    }
    if !payload.is_empty() {
        encode_key(7, WireType::LengthDelimited, out);
        encode_varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
}

/// Appends a frame body's loss counters (`AgentFrame` fields 14 and 15):
/// protobuf merges fields appended to a message.
pub fn put_drops(chunks: u64, bytes: u64, out: &mut Vec<u8>) {
    put_uint(14, chunks, out);
    put_uint(15, bytes, out);
}

/// Appends `body` with its varint length prefix.
pub fn put_delimited(body: &[u8], tail: &[u8], out: &mut Vec<u8>) {
    encode_varint((body.len() + tail.len()) as u64, out);
    out.extend_from_slice(body);
    out.extend_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettap_shared_proto::v1 as pb;
    use prost::Message;

    fn prost_frame(head: &DataHead<'_>, payload: &[u8], drops: (u64, u64)) -> pb::AgentFrame {
        let endpoint = |ip: &Ip, port: u16| {
            (!ip.is_empty()).then(|| pb::Endpoint { ip: ip.bytes().to_vec(), port: port.into() })
        };
        let c = head.conn;
        pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Data(pb::AgentData {
                conn: Some(pb::AgentConn {
                    local: endpoint(&c.local_ip, c.local_port),
                    remote: endpoint(&c.remote_ip, c.remote_port),
                    role: head.role,
                    fd: -1,
                    object_id: c.object_id,
                    peer_port: c.peer_port.into(),
                }),
                direction: head.direction,
                hook: head.hook,
                seq: head.seq,
                ts_boot_ns: head.ts_boot_ns,
                tid: head.tid,
                payload: payload.to_vec().into(),
            })),
            dropped_chunks: drops.0,
            dropped_bytes: drops.1,
        }
    }

    /// Byte for byte what prost writes, for addresses of both families or
    /// none, zero and non-zero scalars, empty and long payloads.
    #[test]
    fn the_same_bytes_as_prost() {
        let v4 = ConnKey {
            local_ip: Ip::new(&[127, 0, 0, 1]),
            local_port: 443,
            remote_ip: Ip::new(&[10, 1, 2, 3]),
            remote_port: 0,
            object_id: 0,
            peer_port: 0,
        };
        let v6 = ConnKey {
            local_ip: Ip::new(&[0xfe; 16]),
            local_port: 65535,
            remote_ip: Ip::new(&[1; 16]),
            remote_port: 1,
            object_id: 0,
            peer_port: 0,
        };
        let engine = ConnKey {
            local_ip: Ip::default(),
            local_port: 0,
            remote_ip: Ip::default(),
            remote_port: 0,
            object_id: u64::from(u32::MAX) | 1 << 32,
            peer_port: 8443,
        };
        let (mut scratch, mut got) = (Vec::new(), Vec::new());
        for conn in [&v4, &v6, &engine] {
            for (role, direction, hook, seq, ts, tid) in
                [(0, 0, 0, 0, 0, 0), (2, 1, 4, 1 << 40, u64::MAX, 12345), (1, 0, 2, 300, 1, 1)]
            {
                for payload in [&[][..], b"x", &[7u8; 70_000][..]] {
                    let head = DataHead { conn, role, direction, hook, seq, ts_boot_ns: ts, tid };
                    for drops in [(0, 0), (3, 0), (2, 4096)] {
                        got.clear();
                        let mut body = Vec::new();
                        put_data_frame(&head, payload, &mut scratch, &mut body);
                        let mut tail = Vec::new();
                        put_drops(drops.0, drops.1, &mut tail);
                        put_delimited(&body, &tail, &mut got);
                        let want = prost_frame(&head, payload, drops);
                        assert_eq!(pb::AgentFrame::decode_length_delimited(&got[..]).unwrap(), want);
                        if drops == (0, 0) {
                            assert_eq!(got, want.encode_length_delimited_to_vec(), "{head:?}");
                        }
                    }
                }
            }
        }
    }
}

//! Agent frames without I/O: a varint length, then an `AgentFrame`
//! (shared-proto `agent.proto`), read in place (`wire.rs`) and checked into
//! the sensor's own types. Any
//! frame that is oversized, undecodable or says something impossible is an
//! error: the caller closes that agent's connection and nothing else.

use super::wire::{Malformed, Reader, RECURSION_LIMIT};
use crate::events::{Direction, Role};
use bytes::{Buf, Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

/// Largest payload one data frame may carry (the agent sends at most 64 KiB).
pub const MAX_PAYLOAD: usize = 256 << 10;
/// Largest frame: a payload plus room for its other fields.
pub const MAX_FRAME: usize = MAX_PAYLOAD + 4096;
/// Longest text field (runtime names and versions).
const MAX_TEXT: usize = 256;

/// Why an agent connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is not a varint (more than 10 bytes, or above 64 bits).
    #[error("frame length prefix is not a varint")]
    BadLength,
    /// The frame declares more bytes than any frame may have.
    #[error("frame of {len} bytes is over the {MAX_FRAME}-byte limit")]
    Oversized {
        /// Declared length.
        len: u64,
    },
    /// The connection ended inside a frame.
    #[error("connection ended inside a frame ({have} of {want} bytes)")]
    Truncated {
        /// Bytes received of the frame (prefix included).
        have: usize,
        /// Bytes it needed.
        want: usize,
    },
    /// The bytes are not an `AgentFrame`.
    #[error("frame does not decode: {0}")]
    Decode(String),
    /// The frame decodes but breaks a rule.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

/// The instrumented method that handed the plaintext over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `SSLSocketImpl$AppInputStream.read`.
    SocketRead,
    /// `SSLSocketImpl$AppOutputStream.write`.
    SocketWrite,
    /// `SSLEngineImpl.unwrap`.
    EngineUnwrap,
    /// `SSLEngineImpl.wrap`.
    EngineWrap,
}

/// A connection as the agent named it: by its socket's endpoints, or (an
/// SSLEngine, which has no socket) by the engine and its peer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConn {
    /// The socket's local address, when the agent knows it.
    pub local: Option<SocketAddr>,
    /// The peer's address, when the agent knows it.
    pub remote: Option<SocketAddr>,
    /// Client or server, from the TLS layer.
    pub role: Role,
    /// The TLS object's identity in the JVM (0: none).
    pub object_id: u64,
    /// The port the engine was told its peer has (0: unknown).
    pub peer_port: u16,
}

/// Plaintext handed over by one instrumented call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChunk {
    /// Which connection.
    pub conn: AgentConn,
    /// Which way.
    pub direction: Direction,
    /// Which method.
    pub hook: Hook,
    /// Offset of `payload[0]` in this direction's plaintext.
    pub seq: u64,
    /// CLOCK_BOOTTIME, ns.
    pub ts_boot_ns: u64,
    /// The application thread.
    pub tid: u64,
    /// The bytes (a slice of the frame they came in).
    pub payload: Bytes,
}

/// One checked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The agent introduced itself.
    Hello {
        /// The JVM (`java.vm.name`).
        runtime: String,
        /// Its version (`java.vm.version`).
        version: String,
        /// The agent's version.
        agent_version: String,
        /// Loaded into a running JVM (its connections may be mid-message).
        attached_late: bool,
    },
    /// Plaintext.
    Data(AgentChunk),
    /// The application closed a connection.
    Close {
        /// Which.
        conn: AgentConn,
        /// When (CLOCK_BOOTTIME, ns).
        ts_boot_ns: u64,
    },
}

/// A checked frame with the agent's loss counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it says.
    pub event: AgentEvent,
    /// Chunks the agent dropped since its last frame.
    pub dropped_chunks: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

/// Splits a byte stream into checked frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes not yet taken as frames. A frame is split off the front: its
    /// payload is a slice of the same memory, and what follows is not moved.
    buf: BytesMut,
    hello_seen: bool,
}

/// `(value, prefix length)` of the varint at the start of `b`, `None` if incomplete.
fn varint(b: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Err(FrameError::BadLength);
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= 10 {
        return Err(FrameError::BadLength);
    }
    Ok(None)
}

impl FrameReader {
    /// A reader at the start of a connection (a hello must come first).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer itself, for a caller that reads into it (bytes appended
    /// are the stream's next ones): one copy less than [`push`](Self::push).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((len, prefix)) = varint(&self.buf)? else { return Ok(None) };
        if len > MAX_FRAME as u64 {
            return Err(FrameError::Oversized { len });
        }
        let end = prefix + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(end).freeze();
        frame.advance(prefix);
        let checked = decode(frame)?;
        match (&checked.event, self.hello_seen) {
            (AgentEvent::Hello { .. }, true) => return Err(FrameError::Invalid("a second hello")),
            (AgentEvent::Hello { .. }, false) => self.hello_seen = true,
            (_, false) => return Err(FrameError::Invalid("the first frame is not a hello")),
            _ => {}
        }
        Ok(Some(checked))
    }

    /// The connection ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        let rest = &self.buf[..];
        if rest.is_empty() {
            return Ok(());
        }
        let want = match varint(rest) {
            Ok(Some((len, prefix))) => prefix + len as usize,
            _ => rest.len() + 1,
        };
        Err(FrameError::Truncated { have: rest.len(), want })
    }
}

/// The `Endpoint` fields, as read (`ip` a range of the frame).
#[derive(Default)]
struct RawEndpoint {
    ip: Range<usize>,
    port: u32,
}

/// The `AgentConn` fields that matter (`fd` is read and left).
#[derive(Default)]
struct RawConn {
    local: Option<RawEndpoint>,
    remote: Option<RawEndpoint>,
    role: i32,
    object_id: u64,
    peer_port: u32,
}

#[derive(Default)]
struct RawHello {
    runtime: Range<usize>,
    version: Range<usize>,
    agent_version: Range<usize>,
    attached_late: bool,
}

#[derive(Default)]
struct RawData {
    conn: Option<RawConn>,
    direction: i32,
    hook: i32,
    seq: u64,
    ts_boot_ns: u64,
    tid: u64,
    payload: Range<usize>,
}

#[derive(Default)]
struct RawClose {
    conn: Option<RawConn>,
    ts_boot_ns: u64,
}

enum RawKind {
    Hello(RawHello),
    Data(RawData),
    Close(RawClose),
}

/// An `AgentFrame` as read, before its rules are checked. A field seen
/// twice is merged as protobuf merges (the last scalar wins, messages
/// merge field by field, another member of the oneof replaces it).
#[derive(Default)]
struct RawFrame {
    kind: Option<RawKind>,
    dropped_chunks: u64,
    dropped_bytes: u64,
}

/// The fields of one occurrence of a message field, merged into `value`.
#[inline(always)]
fn merge_message<T>(
    r: &mut Reader,
    wire: u8,
    budget: u32,
    value: &mut T,
    fields: impl Fn(&mut Reader, &mut T, u32) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let (mut inner, budget) = r.message(wire, budget)?;
    while inner.more() {
        fields(&mut inner, value, budget)?;
    }
    Ok(())
}

/// A message field that may be absent: present from its first occurrence on.
#[inline(always)]
fn merge_into<T: Default>(
    r: &mut Reader,
    wire: u8,
    budget: u32,
    into: &mut Option<T>,
    fields: impl Fn(&mut Reader, &mut T, u32) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    merge_message(r, wire, budget, into.get_or_insert_with(T::default), fields)
}

#[inline(always)]
fn endpoint_field(r: &mut Reader, e: &mut RawEndpoint, budget: u32) -> Result<(), Malformed> {
    match r.key()? {
        (1, wire) => e.ip = r.span(wire)?,
        (2, wire) => e.port = r.uint(wire)? as u32,
        (field, wire) => r.skip(field, wire, budget)?,
    }
    Ok(())
}

#[inline(always)]
fn conn_field(r: &mut Reader, c: &mut RawConn, budget: u32) -> Result<(), Malformed> {
    match r.key()? {
        (1, wire) => merge_into(r, wire, budget, &mut c.local, endpoint_field)?,
        (2, wire) => merge_into(r, wire, budget, &mut c.remote, endpoint_field)?,
        (3, wire) => c.role = r.uint(wire)? as i32,
        (4, wire) => {
            r.uint(wire)?; // the fd: the agent does not know it
        }
        (5, wire) => c.object_id = r.uint(wire)?,
        (6, wire) => c.peer_port = r.uint(wire)? as u32,
        (field, wire) => r.skip(field, wire, budget)?,
    }
    Ok(())
}

#[inline(always)]
fn hello_field(r: &mut Reader, h: &mut RawHello, budget: u32) -> Result<(), Malformed> {
    match r.key()? {
        (1, wire) => {
            r.uint(wire)?; // the pid the agent believes: the socket's peer is what counts
        }
        (2, wire) => h.runtime = r.text(wire)?,
        (3, wire) => h.version = r.text(wire)?,
        (4, wire) => h.agent_version = r.text(wire)?,
        (5, wire) => h.attached_late = r.uint(wire)? != 0,
        (field, wire) => r.skip(field, wire, budget)?,
    }
    Ok(())
}

#[inline(always)]
fn data_field(r: &mut Reader, d: &mut RawData, budget: u32) -> Result<(), Malformed> {
    match r.key()? {
        (1, wire) => merge_into(r, wire, budget, &mut d.conn, conn_field)?,
        (2, wire) => d.direction = r.uint(wire)? as i32,
        (3, wire) => d.hook = r.uint(wire)? as i32,
        (4, wire) => d.seq = r.uint(wire)?,
        (5, wire) => d.ts_boot_ns = r.uint(wire)?,
        (6, wire) => d.tid = r.uint(wire)?,
        (7, wire) => d.payload = r.span(wire)?,
        (field, wire) => r.skip(field, wire, budget)?,
    }
    Ok(())
}

#[inline(always)]
fn close_field(r: &mut Reader, c: &mut RawClose, budget: u32) -> Result<(), Malformed> {
    match r.key()? {
        (1, wire) => merge_into(r, wire, budget, &mut c.conn, conn_field)?,
        (2, wire) => c.ts_boot_ns = r.uint(wire)?,
        (field, wire) => r.skip(field, wire, budget)?,
    }
    Ok(())
}

/// One member of the frame's oneof: merged into the same member, or
/// replacing another.
fn kind_member<T: Default>(
    r: &mut Reader,
    wire: u8,
    kind: &mut Option<RawKind>,
    get: fn(&mut RawKind) -> Option<&mut T>,
    make: fn(T) -> RawKind,
    fields: impl Fn(&mut Reader, &mut T, u32) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    if let Some(value) = kind.as_mut().and_then(get) {
        return merge_message(r, wire, RECURSION_LIMIT, value, fields);
    }
    let mut value = T::default();
    merge_message(r, wire, RECURSION_LIMIT, &mut value, fields)?;
    *kind = Some(make(value));
    Ok(())
}

fn read_frame(bytes: &[u8]) -> Result<RawFrame, Malformed> {
    let mut r = Reader::new(bytes);
    let mut f = RawFrame::default();
    while r.more() {
        match r.key()? {
            (1, wire) => kind_member(
                &mut r,
                wire,
                &mut f.kind,
                |k| if let RawKind::Hello(h) = k { Some(h) } else { None },
                RawKind::Hello,
                hello_field,
            )?,
            (2, wire) => kind_member(
                &mut r,
                wire,
                &mut f.kind,
                |k| if let RawKind::Data(d) = k { Some(d) } else { None },
                RawKind::Data,
                data_field,
            )?,
            (3, wire) => kind_member(
                &mut r,
                wire,
                &mut f.kind,
                |k| if let RawKind::Close(c) = k { Some(c) } else { None },
                RawKind::Close,
                close_field,
            )?,
            (14, wire) => f.dropped_chunks = r.uint(wire)?,
            (15, wire) => f.dropped_bytes = r.uint(wire)?,
            (field, wire) => r.skip(field, wire, RECURSION_LIMIT)?,
        }
    }
    Ok(f)
}

/// One frame's bytes (after its length prefix), decoded and checked. The
/// payload of a data frame is a slice of `frame`.
pub fn decode(frame: Bytes) -> Result<Frame, FrameError> {
    let raw = read_frame(&frame).map_err(|why| FrameError::Decode(why.to_string()))?;
    check(raw, &frame)
}

fn text(frame: &Bytes, span: Range<usize>, what: &'static str) -> Result<String, FrameError> {
    if span.len() > MAX_TEXT {
        return Err(FrameError::Invalid(what));
    }
    // UTF-8 was checked when the field was read.
    Ok(String::from_utf8_lossy(&frame[span]).into_owned())
}

fn endpoint(frame: &[u8], e: Option<RawEndpoint>) -> Result<Option<SocketAddr>, FrameError> {
    let Some(e) = e else { return Ok(None) };
    let port = u16::try_from(e.port).map_err(|_| FrameError::Invalid("port above 65535"))?;
    let ip = &frame[e.ip];
    let ip = if let Ok(v4) = <[u8; 4]>::try_from(ip) {
        IpAddr::V4(Ipv4Addr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(ip) {
        let v6 = Ipv6Addr::from(v6);
        // The kernel's records show v4-mapped addresses as IPv4.
        v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
    } else {
        return Err(FrameError::Invalid("an address is neither 4 nor 16 bytes"));
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

fn conn(frame: &[u8], c: Option<RawConn>) -> Result<AgentConn, FrameError> {
    let c = c.ok_or(FrameError::Invalid("data or close without a connection"))?;
    let role = match c.role {
        1 => Role::Client,
        2 => Role::Server,
        0 => Role::Unknown,
        _ => return Err(FrameError::Invalid("unknown role")),
    };
    let peer_port = u16::try_from(c.peer_port).map_err(|_| FrameError::Invalid("port above 65535"))?;
    let conn = AgentConn {
        local: endpoint(frame, c.local)?,
        remote: endpoint(frame, c.remote)?,
        role,
        object_id: c.object_id,
        peer_port,
    };
    if conn.remote.is_none() && (conn.object_id == 0 || conn.peer_port == 0) {
        return Err(FrameError::Invalid(
            "a connection named by neither its remote address nor an engine and peer port",
        ));
    }
    Ok(conn)
}

/// `agent.proto`'s enum values, as the frame carries them.
const DIRECTION_SEND: i32 = 0;
const DIRECTION_RECV: i32 = 1;
const HOOK_SOCKET_READ: i32 = 1;
const HOOK_SOCKET_WRITE: i32 = 2;
const HOOK_ENGINE_UNWRAP: i32 = 3;
const HOOK_ENGINE_WRAP: i32 = 4;

fn check(f: RawFrame, frame: &Bytes) -> Result<Frame, FrameError> {
    let event = match f.kind.ok_or(FrameError::Invalid("empty frame"))? {
        RawKind::Hello(h) => AgentEvent::Hello {
            runtime: text(frame, h.runtime, "runtime name over 256 bytes")?,
            version: text(frame, h.version, "runtime version over 256 bytes")?,
            agent_version: text(frame, h.agent_version, "agent version over 256 bytes")?,
            attached_late: h.attached_late,
        },
        RawKind::Data(d) => {
            let direction = match d.direction {
                DIRECTION_SEND => Direction::Send,
                DIRECTION_RECV => Direction::Recv,
                _ => return Err(FrameError::Invalid("unknown direction")),
            };
            let hook = match d.hook {
                HOOK_SOCKET_READ => Hook::SocketRead,
                HOOK_SOCKET_WRITE => Hook::SocketWrite,
                HOOK_ENGINE_UNWRAP => Hook::EngineUnwrap,
                HOOK_ENGINE_WRAP => Hook::EngineWrap,
                _ => return Err(FrameError::Invalid("unknown hook")),
            };
            let reads = matches!(hook, Hook::SocketRead | Hook::EngineUnwrap);
            if reads != (direction == Direction::Recv) {
                return Err(FrameError::Invalid("direction does not match the hook"));
            }
            if d.payload.is_empty() || d.payload.len() > MAX_PAYLOAD {
                return Err(FrameError::Invalid("payload empty or over the limit"));
            }
            if d.seq.checked_add(d.payload.len() as u64).is_none() {
                return Err(FrameError::Invalid("seq overflows"));
            }
            AgentEvent::Data(AgentChunk {
                conn: conn(frame, d.conn)?,
                direction,
                hook,
                seq: d.seq,
                ts_boot_ns: d.ts_boot_ns,
                tid: d.tid,
                payload: frame.slice(d.payload),
            })
        }
        RawKind::Close(c) => AgentEvent::Close { conn: conn(frame, c.conn)?, ts_boot_ns: c.ts_boot_ns },
    };
    Ok(Frame { event, dropped_chunks: f.dropped_chunks, dropped_bytes: f.dropped_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettap_shared_proto::v1 as pb;
    use prost::Message;

    fn encode(f: &pb::AgentFrame) -> Vec<u8> {
        f.encode_length_delimited_to_vec()
    }

    fn hello() -> pb::AgentFrame {
        pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Hello(pb::AgentHello {
                pid: 1,
                runtime: "OpenJDK 64-Bit Server VM".into(),
                runtime_version: "17".into(),
                agent_version: "0.1.0".into(),
                attached_late: false,
            })),
            ..Default::default()
        }
    }

    fn data(payload: &[u8]) -> pb::AgentFrame {
        pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Data(pb::AgentData {
                conn: Some(pb::AgentConn {
                    local: Some(pb::Endpoint { ip: vec![127, 0, 0, 1], port: 40000 }),
                    remote: Some(pb::Endpoint { ip: vec![127, 0, 0, 1], port: 8443 }),
                    role: pb::Role::Client as i32,
                    fd: -1,
                    ..Default::default()
                }),
                direction: pb::Direction::Send as i32,
                hook: pb::AgentHook::SslSocketWrite as i32,
                seq: 5,
                ts_boot_ns: 9,
                tid: 3,
                payload: payload.to_vec().into(),
            })),
            dropped_chunks: 2,
            dropped_bytes: 20,
        }
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut bytes = encode(&hello());
        bytes.extend(encode(&data(b"GET / HTTP/1.1\r\n\r\n")));
        for cut in 0..bytes.len() {
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                r.push(part);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            r.finish().unwrap();
            assert_eq!(got.len(), 2, "cut at {cut}");
            let AgentEvent::Data(c) = &got[1].event else { panic!("not data") };
            assert_eq!(&c.payload[..], b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(c.conn.remote.unwrap().to_string(), "127.0.0.1:8443");
            assert_eq!((c.seq, c.direction, c.hook), (5, Direction::Send, Hook::SocketWrite));
            assert_eq!((got[1].dropped_chunks, got[1].dropped_bytes), (2, 20));
        }
    }

    #[test]
    fn oversized_garbage_truncated_and_out_of_order_frames_are_errors() {
        let mut r = FrameReader::new();
        r.push(&[0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(r.next_frame(), Err(FrameError::Oversized { .. })));

        let mut r = FrameReader::new();
        r.push(&[0xff; 11]);
        assert_eq!(r.next_frame(), Err(FrameError::BadLength));

        let mut r = FrameReader::new();
        r.push(&[5, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Err(FrameError::Decode(_))));

        let mut r = FrameReader::new();
        let h = encode(&hello());
        r.push(&h[..h.len() - 1]);
        assert_eq!(r.next_frame(), Ok(None));
        assert!(matches!(r.finish(), Err(FrameError::Truncated { .. })));

        let mut r = FrameReader::new();
        r.push(&encode(&data(b"x")));
        assert_eq!(r.next_frame(), Err(FrameError::Invalid("the first frame is not a hello")));

        let mut r = FrameReader::new();
        r.push(&encode(&hello()));
        r.push(&encode(&hello()));
        assert!(r.next_frame().unwrap().is_some());
        assert_eq!(r.next_frame(), Err(FrameError::Invalid("a second hello")));
    }

    #[test]
    fn impossible_contents_are_refused() {
        let mut bad = data(b"x");
        let Some(pb::agent_frame::Kind::Data(d)) = &mut bad.kind else { unreachable!() };
        d.direction = pb::Direction::Recv as i32;
        let mut wrong_ip = data(b"x");
        let Some(pb::agent_frame::Kind::Data(d2)) = &mut wrong_ip.kind else { unreachable!() };
        d2.conn.as_mut().unwrap().remote.as_mut().unwrap().ip = vec![1, 2, 3];
        for (f, why) in [
            (bad, "direction does not match the hook"),
            (wrong_ip, "an address is neither 4 nor 16 bytes"),
            (data(b""), "payload empty or over the limit"),
            (pb::AgentFrame::default(), "empty frame"),
        ] {
            let mut r = FrameReader::new();
            r.push(&encode(&hello()));
            r.push(&encode(&f));
            r.next_frame().unwrap();
            assert_eq!(r.next_frame(), Err(FrameError::Invalid(why)));
        }
    }

    /// What a frame means by prost's own decoding: the reference the
    /// in-place reader is held to (the same checks, over prost's messages).
    fn by_prost(bytes: &[u8]) -> Result<Frame, FrameError> {
        let f = pb::AgentFrame::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
        let endpoint = |e: Option<pb::Endpoint>| -> Result<Option<SocketAddr>, FrameError> {
            let Some(e) = e else { return Ok(None) };
            let port = u16::try_from(e.port).map_err(|_| FrameError::Invalid("port above 65535"))?;
            let ip = match e.ip.len() {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(e.ip.as_slice()).unwrap())),
                16 => {
                    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(e.ip.as_slice()).unwrap());
                    v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
                }
                _ => return Err(FrameError::Invalid("an address is neither 4 nor 16 bytes")),
            };
            Ok(Some(SocketAddr::new(ip, port)))
        };
        let conn = |c: Option<pb::AgentConn>| -> Result<AgentConn, FrameError> {
            let c = c.ok_or(FrameError::Invalid("data or close without a connection"))?;
            let role = match pb::Role::try_from(c.role) {
                Ok(pb::Role::Client) => Role::Client,
                Ok(pb::Role::Server) => Role::Server,
                Ok(pb::Role::Unknown) => Role::Unknown,
                Err(_) => return Err(FrameError::Invalid("unknown role")),
            };
            let peer_port =
                u16::try_from(c.peer_port).map_err(|_| FrameError::Invalid("port above 65535"))?;
            let conn = AgentConn {
                local: endpoint(c.local)?,
                remote: endpoint(c.remote)?,
                role,
                object_id: c.object_id,
                peer_port,
            };
            if conn.remote.is_none() && (conn.object_id == 0 || conn.peer_port == 0) {
                return Err(FrameError::Invalid(
                    "a connection named by neither its remote address nor an engine and peer port",
                ));
            }
            Ok(conn)
        };
        let text = |s: String, what| if s.len() > MAX_TEXT { Err(FrameError::Invalid(what)) } else { Ok(s) };
        use pb::agent_frame::Kind;
        let event = match f.kind.ok_or(FrameError::Invalid("empty frame"))? {
            Kind::Hello(h) => AgentEvent::Hello {
                runtime: text(h.runtime, "runtime name over 256 bytes")?,
                version: text(h.runtime_version, "runtime version over 256 bytes")?,
                agent_version: text(h.agent_version, "agent version over 256 bytes")?,
                attached_late: h.attached_late,
            },
            Kind::Data(d) => {
                let direction = match pb::Direction::try_from(d.direction) {
                    Ok(pb::Direction::Send) => Direction::Send,
                    Ok(pb::Direction::Recv) => Direction::Recv,
                    Err(_) => return Err(FrameError::Invalid("unknown direction")),
                };
                let hook = match pb::AgentHook::try_from(d.hook) {
                    Ok(pb::AgentHook::SslSocketRead) => Hook::SocketRead,
                    Ok(pb::AgentHook::SslSocketWrite) => Hook::SocketWrite,
                    Ok(pb::AgentHook::SslEngineUnwrap) => Hook::EngineUnwrap,
                    Ok(pb::AgentHook::SslEngineWrap) => Hook::EngineWrap,
                    _ => return Err(FrameError::Invalid("unknown hook")),
                };
                if matches!(hook, Hook::SocketRead | Hook::EngineUnwrap) != (direction == Direction::Recv) {
                    return Err(FrameError::Invalid("direction does not match the hook"));
                }
                if d.payload.is_empty() || d.payload.len() > MAX_PAYLOAD {
                    return Err(FrameError::Invalid("payload empty or over the limit"));
                }
                if d.seq.checked_add(d.payload.len() as u64).is_none() {
                    return Err(FrameError::Invalid("seq overflows"));
                }
                AgentEvent::Data(AgentChunk {
                    conn: conn(d.conn)?,
                    direction,
                    hook,
                    seq: d.seq,
                    ts_boot_ns: d.ts_boot_ns,
                    tid: d.tid,
                    payload: d.payload,
                })
            }
            Kind::Close(c) => AgentEvent::Close { conn: conn(c.conn)?, ts_boot_ns: c.ts_boot_ns },
        };
        Ok(Frame { event, dropped_chunks: f.dropped_chunks, dropped_bytes: f.dropped_bytes })
    }

    /// Both readers on the same bytes: equal frames, or both refuse (a
    /// refusal by prost is a `Decode` error here too; the reasons' words may differ).
    /// Returns what prost made of them: a frame, a refusal of its contents
    /// (0), or of its bytes (1), for the callers' counts.
    fn agree(bytes: &[u8]) -> Result<Frame, usize> {
        let ours = decode(Bytes::copy_from_slice(bytes));
        match (by_prost(bytes), ours) {
            (Err(FrameError::Decode(_)), Err(FrameError::Decode(_))) => Err(1),
            (theirs, ours) => {
                assert_eq!(ours, theirs, "frame {bytes:02x?}");
                theirs.map_err(|_| 0)
            }
        }
    }

    /// Frames of every kind and shape the agent sends, and a few it does not.
    fn samples() -> Vec<Vec<u8>> {
        let engine = pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Data(pb::AgentData {
                conn: Some(pb::AgentConn {
                    role: pb::Role::Server as i32,
                    object_id: 77,
                    peer_port: 51000,
                    fd: -1,
                    ..Default::default()
                }),
                direction: pb::Direction::Recv as i32,
                hook: pb::AgentHook::SslEngineUnwrap as i32,
                seq: u64::MAX - 300,
                payload: vec![0; 300].into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut v6 = data(b"HTTP/1.1 200 OK\r\n\r\n");
        if let Some(pb::agent_frame::Kind::Data(d)) = &mut v6.kind {
            let c = d.conn.as_mut().unwrap();
            c.local = Some(pb::Endpoint {
                ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1].to_vec(),
                port: 1,
            });
            c.remote = Some(pb::Endpoint { ip: [0x20, 1, 0xd, 0xb8].repeat(4), port: 443 });
        }
        let close = pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Close(pb::AgentClose {
                conn: Some(pb::AgentConn { object_id: 1, peer_port: 2, ..Default::default() }),
                ts_boot_ns: 12,
            })),
            dropped_bytes: 1 << 40,
            ..Default::default()
        };
        let mut out: Vec<Vec<u8>> = [hello(), data(b"GET / HTTP/1.1\r\n\r\n"), engine, v6, close]
            .iter()
            .map(|f| f.encode_to_vec())
            .collect();
        // Repeated fields and unknown ones (a varint, fixed, bytes and a
        // nested group), each at the frame's level and inside its messages.
        let unknown = [
            0x98, 0x01, 0x05, // field 19, a varint
            0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, // 21, eight bytes
            0xb2, 0x01, 0x02, 0xaa, 0xbb, // 22, length-delimited
            0xbb, 0x01, 0xc0, 0x01, 0x01, 0xbc, 0x01, // 23, a group holding 24
            0xcd, 0x01, 1, 2, 3, 4, // 25, four bytes
        ];
        // Data, then a close (another member of the oneof: replaces it),
        // then data again (replaces the close).
        let mut twice = out[1].clone();
        twice.extend_from_slice(&out[4]);
        twice.extend_from_slice(&out[1]);
        twice.extend_from_slice(&unknown);
        out.push(twice);
        // A second data message merged into the first: its connection's
        // local endpoint (present, no fields) keeps the first's address.
        let mut inner = vec![0x0a, 0x02, 0x0a, 0x00];
        inner.extend_from_slice(&unknown);
        inner.extend_from_slice(&[0x40, 0x01]);
        let mut nested = data(b"x").encode_to_vec();
        nested.push(0x12);
        nested.extend(encode_len(inner.len()));
        nested.extend(inner);
        out.push(nested);
        out
    }

    #[test]
    fn the_in_place_reader_reads_what_prost_reads() {
        for s in samples() {
            assert!(agree(&s).is_ok(), "sample {s:02x?} is a frame");
        }
    }

    #[test]
    fn mutated_frames_are_read_as_prost_reads_them() {
        // xorshift: the same cases every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let samples = samples();
        let mut seen = [0; 3]; // frames, refused contents, refused bytes
        for _ in 0..20_000 {
            // A sample, or a frame of random values (some out of range),
            // then up to three changes to its bytes.
            let mut b = if next() % 2 == 0 {
                samples[next() as usize % samples.len()].clone()
            } else {
                random_frame(&mut next).encode_to_vec()
            };
            for _ in 0..next() % 4 {
                let at = next() as usize % (b.len() + 1);
                match next() % 6 {
                    0 => b.truncate(at),
                    1 if at < b.len() => b[at] = next() as u8,
                    2 if at < b.len() => b[at] ^= 1 << (next() % 8),
                    3 => b.insert(at, [0x00, 0x01, 0x7f, 0x80, 0xff, 0x04, 0x0b, 0x0c][next() as usize % 8]),
                    4 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {
                        let other = &samples[next() as usize % samples.len()];
                        b.splice(at..at, other[..next() as usize % (other.len() + 1)].iter().copied());
                    }
                }
            }
            seen[agree(&b).map_or_else(|e| 1 + e, |_| 0)] += 1;
        }
        // Every outcome is well represented (so the agreement means something).
        assert!(seen.iter().all(|&n| n > 2_000), "frames, refused contents, refused bytes: {seen:?}");
    }

    /// An `AgentFrame` with each field drawn from values the checks accept
    /// and values they refuse.
    fn random_frame(next: &mut impl FnMut() -> u64) -> pb::AgentFrame {
        let mut pick = |choices: &[u64]| choices[next() as usize % choices.len()];
        let endpoint = |pick: &mut dyn FnMut(&[u64]) -> u64| {
            (pick(&[0, 1, 1, 1]) == 1).then(|| pb::Endpoint {
                ip: vec![7; pick(&[0, 3, 4, 4, 16, 16]) as usize],
                port: pick(&[0, 443, 65535, 65536]) as u32,
            })
        };
        let conn = (pick(&[0, 1, 1, 1, 1]) == 1).then(|| pb::AgentConn {
            local: endpoint(&mut pick),
            remote: endpoint(&mut pick),
            role: pick(&[0, 1, 2, 3, u64::MAX]) as i32,
            fd: -1,
            object_id: pick(&[0, 9]),
            peer_port: pick(&[0, 8443, 70000]) as u32,
        });
        use pb::agent_frame::Kind;
        let kind = match pick(&[0, 1, 2, 2, 2, 3]) {
            0 => None,
            1 => Some(Kind::Hello(pb::AgentHello {
                runtime: "é".repeat(pick(&[0, 100, 129]) as usize),
                ..Default::default()
            })),
            2 => Some(Kind::Data(pb::AgentData {
                conn,
                direction: pick(&[0, 1, 2]) as i32,
                hook: pick(&[0, 1, 2, 3, 4, 5]) as i32,
                seq: pick(&[0, 1 << 20, u64::MAX - 100, u64::MAX]),
                ts_boot_ns: pick(&[0, 5]),
                tid: pick(&[0, 6]),
                payload: vec![b'a'; pick(&[0, 1, 100, 300]) as usize].into(),
            })),
            _ => Some(Kind::Close(pb::AgentClose { conn, ts_boot_ns: pick(&[0, 5]) })),
        };
        pb::AgentFrame { kind, dropped_chunks: pick(&[0, 3]), dropped_bytes: pick(&[0, 1 << 33]) }
    }

    #[test]
    fn groups_nest_as_deep_as_prost_allows_and_no_deeper() {
        for depth in [1, 50, 98, 99, 100, 101, 150] {
            // A data frame, then `depth` unknown groups (field 20) nested.
            let mut b = data(b"x").encode_to_vec();
            b.extend(std::iter::repeat_n([0xa3, 0x01], depth).flatten());
            b.extend(std::iter::repeat_n([0xa4, 0x01], depth).flatten());
            let _ = agree(&b);
            // The same inside the data message and inside its connection.
            let mut inner = data(b"x").encode_to_vec();
            let groups: Vec<u8> = std::iter::repeat_n([0xa3, 0x01], depth)
                .flatten()
                .chain(std::iter::repeat_n([0xa4, 0x01], depth).flatten())
                .collect();
            let mut conn_msg = vec![0x0a];
            conn_msg.extend(encode_len(groups.len()));
            conn_msg.extend(&groups);
            inner.push(0x12);
            inner.extend(encode_len(conn_msg.len()));
            inner.extend(&conn_msg);
            let _ = agree(&inner);
        }
    }

    fn encode_len(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        prost::encoding::encode_varint(n as u64, &mut v);
        v
    }
}

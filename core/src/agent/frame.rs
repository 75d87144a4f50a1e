//! Agent frames without I/O: a varint length, then an `AgentFrame`
//! (shared-proto `agent.proto`), checked into the sensor's own types. Any
//! frame that is oversized, undecodable or says something impossible is an
//! error: the caller closes that agent's connection and nothing else.

use crate::events::{Direction, Role};
use bytes::{Buf, Bytes, BytesMut};
use nettap_shared_proto::v1 as pb;
use prost::Message;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
        let decoded = pb::AgentFrame::decode(frame);
        let frame = decoded.map_err(|e| FrameError::Decode(e.to_string()))?;
        let checked = check(frame)?;
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

fn text(s: String, what: &'static str) -> Result<String, FrameError> {
    if s.len() > MAX_TEXT {
        return Err(FrameError::Invalid(what));
    }
    Ok(s)
}

fn endpoint(e: Option<pb::Endpoint>) -> Result<Option<SocketAddr>, FrameError> {
    let Some(e) = e else { return Ok(None) };
    let port = u16::try_from(e.port).map_err(|_| FrameError::Invalid("port above 65535"))?;
    let ip = match e.ip.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(e.ip.as_slice()).unwrap())),
        16 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(e.ip.as_slice()).unwrap());
            // The kernel's records show v4-mapped addresses as IPv4.
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return Err(FrameError::Invalid("an address is neither 4 nor 16 bytes")),
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

fn conn(c: Option<pb::AgentConn>) -> Result<AgentConn, FrameError> {
    let c = c.ok_or(FrameError::Invalid("data or close without a connection"))?;
    let role = match pb::Role::try_from(c.role) {
        Ok(pb::Role::Client) => Role::Client,
        Ok(pb::Role::Server) => Role::Server,
        Ok(pb::Role::Unknown) => Role::Unknown,
        Err(_) => return Err(FrameError::Invalid("unknown role")),
    };
    let peer_port = u16::try_from(c.peer_port).map_err(|_| FrameError::Invalid("port above 65535"))?;
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
}

fn check(f: pb::AgentFrame) -> Result<Frame, FrameError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

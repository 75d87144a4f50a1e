//! HTTP/2 frames (RFC 9113 §4.1, §6): the 9-byte header and each type's
//! payload, parsed from bytes with no state. The rules a header must follow
//! whatever the settings (`FrameHeader::check`) are what tells a frame
//! boundary from the middle of a payload when a connection is joined late.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value: the largest payload any peer
/// must accept, so frames larger than this are rare (and suspect when
/// looking for a boundary).
pub const DEFAULT_MAX_FRAME: usize = 16_384;

/// Frame types (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0;
    /// HEADERS.
    pub const HEADERS: u8 = 1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 5;
    /// PING.
    pub const PING: u8 = 6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS, PUSH_PROMISE).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A type this parser does not know (allowed on the wire, ignored).
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A frame on a stream its type forbids (0 or not 0).
    #[error("{kind} frame on stream {stream}")]
    WrongStream {
        /// The type's name.
        kind: &'static str,
        /// The stream it came on.
        stream: u32,
    },
    /// A length its type forbids.
    #[error("{kind} frame of {len} bytes")]
    BadLength {
        /// The type's name.
        kind: &'static str,
        /// Payload length.
        len: usize,
    },
    /// Flags its type does not define.
    #[error("{kind} frame with flags {flags:#04x}")]
    BadFlags {
        /// The type's name.
        kind: &'static str,
        /// The flags.
        flags: u8,
    },
    /// The padding is longer than the payload.
    #[error("padding longer than the {0} payload")]
    BadPadding(&'static str),
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: usize,
    /// Type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (31 bits).
    pub stream: u32,
    /// The reserved bit: senders leave it clear, receivers ignore it.
    pub reserved: bool,
}

/// Name of a frame type, for errors and logs.
pub fn kind_name(kind: u8) -> &'static str {
    const NAMES: [&str; 10] = [
        "DATA",
        "HEADERS",
        "PRIORITY",
        "RST_STREAM",
        "SETTINGS",
        "PUSH_PROMISE",
        "PING",
        "GOAWAY",
        "WINDOW_UPDATE",
        "CONTINUATION",
    ];
    NAMES.get(usize::from(kind)).copied().unwrap_or("unknown")
}

/// Name of an error code (RFC 9113 §7), as RST_STREAM and GOAWAY carry it.
pub fn error_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(code as usize).copied()
}

impl FrameHeader {
    /// The header at the start of `b`, if there are 9 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        let id = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        Some(Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: id & 0x7fff_ffff,
            reserved: id & 0x8000_0000 != 0,
        })
    }

    /// The rules of its type that hold whatever the settings (§6): the
    /// stream it may come on, fixed lengths, defined flags. Unknown types
    /// are an error here; a synced reader skips them instead.
    pub fn check(&self) -> Result<(), FrameError> {
        use kind::*;
        let name = kind_name(self.kind);
        let (on_stream, flags, len_ok) = match self.kind {
            DATA => (Some(true), flag::END_STREAM | flag::PADDED, true),
            HEADERS => {
                (Some(true), flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY, true)
            }
            PRIORITY => (Some(true), 0, self.len == 5),
            RST_STREAM => (Some(true), 0, self.len == 4),
            SETTINGS => (
                Some(false),
                flag::ACK,
                if self.flags & flag::ACK != 0 { self.len == 0 } else { self.len.is_multiple_of(6) },
            ),
            PUSH_PROMISE => (Some(true), flag::END_HEADERS | flag::PADDED, self.len >= 4),
            PING => (Some(false), flag::ACK, self.len == 8),
            GOAWAY => (Some(false), 0, self.len >= 8),
            WINDOW_UPDATE => (None, 0, self.len == 4),
            CONTINUATION => (Some(true), flag::END_HEADERS, true),
            other => return Err(FrameError::UnknownType(other)),
        };
        if on_stream.is_some_and(|s| s != (self.stream != 0)) {
            return Err(FrameError::WrongStream { kind: name, stream: self.stream });
        }
        if !len_ok {
            return Err(FrameError::BadLength { kind: name, len: self.len });
        }
        if self.flags & !flags != 0 {
            return Err(FrameError::BadFlags { kind: name, flags: self.flags });
        }
        Ok(())
    }
}

/// The SETTINGS parameters this parser uses (§6.5.2); the rest are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// SETTINGS_HEADER_TABLE_SIZE: the HPACK table the sender's decoder
    /// keeps, so the largest the other side's encoder may use.
    pub header_table_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: Option<u32>,
}

/// A frame, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA, padding removed.
    Data {
        /// Stream.
        stream: u32,
        /// END_STREAM.
        end_stream: bool,
        /// Body bytes.
        data: &'a [u8],
    },
    /// HEADERS, padding and priority removed.
    Headers {
        /// Stream.
        stream: u32,
        /// END_STREAM.
        end_stream: bool,
        /// END_HEADERS (else CONTINUATION frames follow).
        end_headers: bool,
        /// Header block fragment.
        block: &'a [u8],
    },
    /// PRIORITY (deprecated; nothing the parser needs).
    Priority {
        /// Stream.
        stream: u32,
    },
    /// RST_STREAM.
    RstStream {
        /// Stream.
        stream: u32,
        /// Error code.
        code: u32,
    },
    /// SETTINGS.
    Settings {
        /// An acknowledgement (no parameters).
        ack: bool,
        /// The parameters used here.
        settings: Settings,
    },
    /// PUSH_PROMISE, padding removed.
    PushPromise {
        /// Stream the promise came on.
        stream: u32,
        /// Stream the pushed response will come on.
        promised: u32,
        /// END_HEADERS.
        end_headers: bool,
        /// Header block fragment (the pushed request's headers).
        block: &'a [u8],
    },
    /// PING.
    Ping {
        /// ACK.
        ack: bool,
    },
    /// GOAWAY.
    GoAway {
        /// Last stream the sender may have processed.
        last_stream: u32,
        /// Error code.
        code: u32,
    },
    /// WINDOW_UPDATE.
    WindowUpdate {
        /// Stream (0: the connection).
        stream: u32,
        /// Window increment.
        increment: u32,
    },
    /// CONTINUATION.
    Continuation {
        /// Stream.
        stream: u32,
        /// END_HEADERS.
        end_headers: bool,
        /// Header block fragment.
        block: &'a [u8],
    },
    /// A type this parser does not know (ignored, as the RFC requires).
    Unknown {
        /// Type.
        kind: u8,
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A payload without its padding (PADDED: a length octet first, that many
/// octets of padding last).
fn unpad<'a>(h: &FrameHeader, p: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if h.flags & flag::PADDED == 0 {
        return Ok(p);
    }
    let pad = usize::from(*p.first().ok_or(FrameError::BadPadding(kind_name(h.kind)))?);
    let end = p.len().checked_sub(1 + pad).ok_or(FrameError::BadPadding(kind_name(h.kind)))?;
    Ok(&p[1..1 + end])
}

impl<'a> Frame<'a> {
    /// The frame `h` with its whole `payload` (of `h.len` bytes).
    pub fn parse(h: &FrameHeader, payload: &'a [u8]) -> Result<Self, FrameError> {
        use kind::*;
        if h.kind > CONTINUATION {
            return Ok(Frame::Unknown { kind: h.kind });
        }
        h.check()?;
        let (stream, f) = (h.stream, h.flags);
        Ok(match h.kind {
            DATA => Frame::Data { stream, end_stream: f & flag::END_STREAM != 0, data: unpad(h, payload)? },
            HEADERS => {
                let mut block = unpad(h, payload)?;
                if f & flag::PRIORITY != 0 {
                    // Stream dependency (4) and weight (1).
                    block = block.get(5..).ok_or(FrameError::BadLength { kind: "HEADERS", len: h.len })?;
                }
                Frame::Headers {
                    stream,
                    end_stream: f & flag::END_STREAM != 0,
                    end_headers: f & flag::END_HEADERS != 0,
                    block,
                }
            }
            PRIORITY => Frame::Priority { stream },
            RST_STREAM => Frame::RstStream { stream, code: be32(payload) },
            SETTINGS => {
                let mut settings = Settings::default();
                for p in payload.as_chunks::<6>().0 {
                    let value = be32(&p[2..]);
                    match u16::from_be_bytes([p[0], p[1]]) {
                        0x1 => settings.header_table_size = Some(value),
                        0x5 => settings.max_frame_size = Some(value),
                        _ => {} // push, streams, window, header list size, unknown
                    }
                }
                Frame::Settings { ack: f & flag::ACK != 0, settings }
            }
            PUSH_PROMISE => {
                let p = unpad(h, payload)?;
                let id = p.get(..4).ok_or(FrameError::BadLength { kind: "PUSH_PROMISE", len: h.len })?;
                Frame::PushPromise {
                    stream,
                    promised: be32(id) & 0x7fff_ffff,
                    end_headers: f & flag::END_HEADERS != 0,
                    block: &p[4..],
                }
            }
            PING => Frame::Ping { ack: f & flag::ACK != 0 },
            GOAWAY => Frame::GoAway { last_stream: be32(payload) & 0x7fff_ffff, code: be32(&payload[4..]) },
            WINDOW_UPDATE => Frame::WindowUpdate { stream, increment: be32(payload) & 0x7fff_ffff },
            _ => Frame::Continuation { stream, end_headers: f & flag::END_HEADERS != 0, block: payload },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A frame's bytes.
    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn parse(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
        let h = FrameHeader::parse(bytes).unwrap();
        assert_eq!(h.len, bytes.len() - HEADER_LEN);
        Frame::parse(&h, &bytes[HEADER_LEN..])
    }

    #[test]
    fn every_type_parses() {
        use kind::*;
        let padded = [&[3u8][..], b"body", &[0, 0, 0]].concat();
        assert_eq!(
            parse(&frame(DATA, flag::PADDED | flag::END_STREAM, 1, &padded)),
            Ok(Frame::Data { stream: 1, end_stream: true, data: b"body" })
        );
        let prio = [&[1u8][..], &[0x80, 0, 0, 3, 15], b"blk", &[0]].concat();
        assert_eq!(
            parse(&frame(HEADERS, flag::PADDED | flag::PRIORITY | flag::END_HEADERS, 5, &prio)),
            Ok(Frame::Headers { stream: 5, end_stream: false, end_headers: true, block: b"blk" })
        );
        assert_eq!(parse(&frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 9])), Ok(Frame::Priority { stream: 3 }));
        assert_eq!(
            parse(&frame(RST_STREAM, 0, 3, &[0, 0, 0, 8])),
            Ok(Frame::RstStream { stream: 3, code: 8 })
        );
        let settings = [0, 1, 0, 0, 0x10, 0, 0, 3, 0, 0, 0, 100, 0, 5, 0, 0, 0x40, 0];
        assert_eq!(
            parse(&frame(SETTINGS, 0, 0, &settings)),
            Ok(Frame::Settings {
                ack: false,
                settings: Settings { header_table_size: Some(4096), max_frame_size: Some(16384) }
            })
        );
        assert_eq!(
            parse(&frame(SETTINGS, flag::ACK, 0, &[])),
            Ok(Frame::Settings { ack: true, settings: Settings::default() })
        );
        assert_eq!(
            parse(&frame(PUSH_PROMISE, flag::END_HEADERS, 1, &[0, 0, 0, 2, 0x82])),
            Ok(Frame::PushPromise { stream: 1, promised: 2, end_headers: true, block: &[0x82] })
        );
        assert_eq!(parse(&frame(PING, flag::ACK, 0, &[0; 8])), Ok(Frame::Ping { ack: true }));
        assert_eq!(
            parse(&frame(GOAWAY, 0, 0, &[0, 0, 0, 7, 0, 0, 0, 2, b'x'])),
            Ok(Frame::GoAway { last_stream: 7, code: 2 })
        );
        assert_eq!(
            parse(&frame(WINDOW_UPDATE, 0, 0, &[0x80, 0, 1, 0])),
            Ok(Frame::WindowUpdate { stream: 0, increment: 256 })
        );
        assert_eq!(
            parse(&frame(CONTINUATION, flag::END_HEADERS, 5, b"rest")),
            Ok(Frame::Continuation { stream: 5, end_headers: true, block: b"rest" })
        );
        assert_eq!(parse(&frame(0x10, 0, 0, b"?")), Ok(Frame::Unknown { kind: 0x10 }));
        assert_eq!(error_name(8), Some("CANCEL"));
        assert_eq!(error_name(99), None);
    }

    #[test]
    fn rule_breaking_frames_are_refused() {
        use kind::*;
        assert_eq!(parse(&frame(DATA, 0, 0, b"x")), Err(FrameError::WrongStream { kind: "DATA", stream: 0 }));
        assert_eq!(
            parse(&frame(SETTINGS, 0, 1, &[])),
            Err(FrameError::WrongStream { kind: "SETTINGS", stream: 1 })
        );
        assert_eq!(
            parse(&frame(SETTINGS, 0, 0, &[0; 5])),
            Err(FrameError::BadLength { kind: "SETTINGS", len: 5 })
        );
        assert_eq!(
            parse(&frame(RST_STREAM, 0, 1, &[0; 3])),
            Err(FrameError::BadLength { kind: "RST_STREAM", len: 3 })
        );
        assert_eq!(parse(&frame(DATA, flag::PADDED, 1, &[5, 1])), Err(FrameError::BadPadding("DATA")));
        assert_eq!(parse(&frame(DATA, flag::PADDED, 1, &[])), Err(FrameError::BadPadding("DATA")));
        assert_eq!(
            parse(&frame(HEADERS, flag::PRIORITY, 1, &[0, 0])),
            Err(FrameError::BadLength { kind: "HEADERS", len: 2 })
        );
        assert_eq!(
            parse(&frame(PING, 0x40, 0, &[0; 8])),
            Err(FrameError::BadFlags { kind: "PING", flags: 0x40 })
        );
        let mut reserved = frame(DATA, 0, 1, b"x");
        reserved[5] |= 0x80;
        assert_eq!(parse(&reserved), Ok(Frame::Data { stream: 1, end_stream: false, data: b"x" }), "ignored");
        assert_eq!(FrameHeader::parse(&[0; 8]), None);
    }
}

//! MongoDB wire protocol: BSON documents ([`bson`]), messages (OP_MSG,
//! OP_QUERY and OP_REPLY for the legacy handshake, OP_COMPRESSED;
//! [`message`]) and the pairing of requests with replies by request id
//! ([`session`]). A connection is MongoDB when its client's first bytes
//! are a message header that makes sense: a length within the server's
//! bound, no `responseTo`, and an opcode a client sends first.

pub mod bson;
pub mod message;
pub mod session;

pub use message::{Message, Op};
pub use session::{MongoExchange, MongoRequest, MongoResponse, MongoSession};

/// Bytes of a message header: length, requestID, responseTo, opCode.
pub const HEADER: usize = 16;

/// The server's `maxMessageSizeBytes` (48 000 000): no real message is longer.
pub const MAX_MESSAGE: u32 = 48_000_000;

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Whole message length, header included.
    pub len: u32,
    /// The sender's id for this message.
    pub request_id: i32,
    /// The request this answers (0 in requests).
    pub response_to: i32,
    /// The opcode.
    pub op_code: i32,
}

impl Header {
    /// The header at the start of `b`, if 16 bytes are there.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let word = |i: usize| i32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        (b.len() >= HEADER).then(|| Header {
            len: word(0) as u32,
            request_id: word(4),
            response_to: word(8),
            op_code: word(12),
        })
    }

    /// A length a message can have.
    pub fn sane_len(&self) -> bool {
        (HEADER as u32 + 1..=MAX_MESSAGE).contains(&self.len)
    }
}

/// OP_MSG flag bits a sender may set (checksumPresent, moreToCome,
/// exhaustAllowed); any other of the low 16 is a required bit no server
/// knows, so a message with one is not MongoDB's.
const KNOWN_MSG_FLAGS: u32 = 0x1 | 0x2 | 0x1_0000;

/// Whether `b` starts a request: `Some(true)` yes, `Some(false)` no, `None`
/// too few bytes. The header must make sense (length, `responseTo` 0, an
/// OP_MSG, OP_QUERY or OP_COMPRESSED), and what follows it too: OP_MSG flags
/// with no unknown required bit and a section kind; an OP_QUERY collection
/// name that is printable and has a dot; a compressed message's original
/// opcode and compressor.
pub fn request_start(b: &[u8]) -> Option<bool> {
    // Refuse early what cannot be a length.
    if b.len() >= 4 {
        let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        if !(HEADER as u32 + 5..=MAX_MESSAGE).contains(&len) {
            return Some(false);
        }
    }
    if b.len() >= 12 && b[8..12] != [0; 4] {
        return Some(false);
    }
    if b.len() >= 16 && ![message::OP_MSG, message::OP_QUERY, message::OP_COMPRESSED].contains(&word(b, 12)) {
        return Some(false);
    }
    let h = Header::parse(b.get(..HEADER)?)?;
    let body = &b[HEADER..];
    match h.op_code {
        message::OP_MSG => {
            let flags = u32::from_le_bytes(body.get(..4)?.try_into().expect("4 bytes"));
            let kind = *body.get(4)?;
            Some(flags & 0xffff & !KNOWN_MSG_FLAGS == 0 && flags >> 16 & !1 == 0 && kind <= 1)
        }
        message::OP_QUERY => {
            let name = &body[body.len().min(4)..];
            let end = name.iter().position(|&c| c == 0);
            let name = &name[..end.unwrap_or(name.len()).min(128)];
            if !name.iter().all(|c| (0x21..0x7f).contains(c)) {
                return Some(false);
            }
            match end {
                Some(n) if n <= 128 => Some(name.contains(&b'.')),
                Some(_) => Some(false),
                None if name.len() >= 128 => Some(false),
                None => None,
            }
        }
        _ => {
            // OP_COMPRESSED: original opcode, uncompressed size, compressor id.
            let original = word(body.get(..4)?, 0);
            let size = u32::from_le_bytes(body.get(4..8)?.try_into().expect("4 bytes"));
            let compressor = *body.get(8)?;
            Some(
                [message::OP_MSG, message::OP_QUERY].contains(&original)
                    && size <= MAX_MESSAGE
                    && compressor <= 3,
            )
        }
    }
}

fn word(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Whether `first` (a connection's first bytes from its client) is a
/// MongoDB request: `Some(true)` yes, `Some(false)` no, `None` too few bytes.
/// A client's first message is under 16 MiB (a hello; a mid-stream join
/// waits for a request that is): the length's high byte is 0, which tells
/// a TLS record (`16 03 01 …`) apart at once.
pub fn classify(first: &[u8]) -> Option<bool> {
    if first.get(3).is_some_and(|&b| b != 0) {
        return Some(false);
    }
    request_start(first)
}

#[cfg(test)]
mod tests {
    use super::bson::encode::{doc, V};
    use super::*;

    /// An OP_MSG request: header, flags, one body section.
    pub(crate) fn op_msg(request_id: i32, response_to: i32, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((HEADER + 5 + body.len()) as i32).to_le_bytes());
        m.extend(request_id.to_le_bytes());
        m.extend(response_to.to_le_bytes());
        m.extend(message::OP_MSG.to_le_bytes());
        m.extend(flags.to_le_bytes());
        m.push(0);
        m.extend(body);
        m
    }

    #[test]
    fn requests_are_recognised_from_their_first_bytes() {
        let hello = op_msg(1, 0, 0, &doc(&[("hello", V::I(1)), ("$db", V::S("admin"))]));
        assert_eq!(classify(&hello), Some(true));
        for n in 0..21 {
            assert_eq!(classify(&hello[..n]), None, "{n} bytes");
        }
        let mut query = Vec::new();
        query.extend(58i32.to_le_bytes());
        query.extend([7, 0, 0, 0, 0, 0, 0, 0]);
        query.extend(message::OP_QUERY.to_le_bytes());
        query.extend([0, 0, 0, 0]);
        query.extend(b"admin.$cmd\0");
        assert_eq!(classify(&query), Some(true));
        assert_eq!(classify(&query[..24]), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(false));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefghij"), Some(false));
        let mut reply = hello.clone();
        reply[8] = 1; // a responseTo: a reply, not a client's first message
        assert_eq!(classify(&reply), Some(false));
        let mut bad = hello.clone();
        bad[16] = 4; // an unknown required flag bit
        assert_eq!(classify(&bad), Some(false));
        let mut bad = hello;
        bad[12] = 0xd4; // OP_INSERT, which no current driver sends
        assert_eq!(classify(&bad), Some(false));
    }
}

//! HTTP/2 framing: a 9-byte header (length, type, flags, stream) and a
//! payload. One reader per direction; it holds at most one frame.

/// A frame, borrowed from the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Frame type (0 DATA, 1 HEADERS, 3 RST_STREAM, 4 SETTINGS, 5 PUSH_PROMISE, 9 CONTINUATION, …).
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (31 bits).
    pub stream: u32,
    /// Payload.
    pub payload: &'a [u8],
}

/// Frame types used here.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0;
    /// HEADERS.
    pub const HEADERS: u8 = 1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 5;
    /// GOAWAY.
    pub const GOAWAY: u8 = 7;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags used here.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS, PUSH_PROMISE).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// Splits one direction's bytes into frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// A reader at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `out` with every frame they complete. At most one
    /// partial frame is held (16 MiB, the largest a frame header can say).
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Frame<'_>)) {
        // Whole frames straight from `data` when nothing is held: no copy.
        if self.buf.is_empty() {
            while let Some(len) = frame_len(data) {
                if data.len() < 9 + len {
                    break;
                }
                out(parse(&data[..9 + len]));
                data = &data[9 + len..];
            }
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while let Some(len) = frame_len(&self.buf[at..]) {
            if self.buf.len() - at < 9 + len {
                break;
            }
            out(parse(&self.buf[at..at + 9 + len]));
            at += 9 + len;
        }
        self.buf.drain(..at);
    }
}

fn frame_len(b: &[u8]) -> Option<usize> {
    (b.len() >= 9).then(|| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
}

fn parse(b: &[u8]) -> Frame<'_> {
    Frame {
        kind: b[3],
        flags: b[4],
        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        payload: &b[9..],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let mut bytes = frame(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 16, 0]);
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 3, b"hello"));
        bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, 5, &[]));
        let want =
            vec![(4u8, 0u8, 0u32, vec![0, 1, 0, 0, 16, 0]), (0, 1, 3, b"hello".to_vec()), (1, 4, 5, vec![])];
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut r = FrameReader::new();
                let mut got = Vec::new();
                for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    r.feed(part, &mut |f| got.push((f.kind, f.flags, f.stream, f.payload.to_vec())));
                }
                assert_eq!(got, want, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn the_reserved_bit_is_ignored() {
        let mut r = FrameReader::new();
        let mut f = frame(kind::DATA, 0, 1, b"x");
        f[5] |= 0x80;
        let mut streams = Vec::new();
        r.feed(&f, &mut |f| streams.push(f.stream));
        assert_eq!(streams, [1]);
    }
}

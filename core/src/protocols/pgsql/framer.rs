//! PostgreSQL v3 message framing: a type byte and a 4-byte length (the
//! client's first message has no type byte). Messages up to a bound are
//! handed out whole; a longer one is skipped and said with its type and
//! length, so a 1 GiB DataRow costs no memory.

/// One framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: type byte (0 for untyped startup messages) and body.
    Message(u8, Vec<u8>),
    /// A message over the bound: its type and body length, not kept.
    Skipped(u8, u64),
}

#[derive(Debug)]
enum State {
    /// Reading the header (`want` bytes: 5 typed, 4 untyped).
    Header,
    /// Reading a body of `len` bytes into `buf`.
    Body { kind: u8, len: usize },
    /// Skipping `left` bytes of an oversized body.
    Skip { kind: u8, len: u64, left: u64 },
    /// One byte answers an SSLRequest or GSSENCRequest (`S`/`N`/`G`).
    Byte,
}

/// Frames one direction.
#[derive(Debug)]
pub struct Framer {
    state: State,
    buf: Vec<u8>,
    typed: bool,
    max: usize,
    /// Bytes of the message in progress (for drop accounting).
    pub in_message: u64,
}

/// Bytes that are not PostgreSQL framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad PostgreSQL message length {0}")]
pub struct BadLength(pub i64);

impl Framer {
    /// A framer of typed messages (`typed`) or of the client's untyped
    /// startup messages, keeping bodies up to `max` bytes.
    pub fn new(typed: bool, max: usize) -> Self {
        Self { state: State::Header, buf: Vec::new(), typed, max, in_message: 0 }
    }

    /// The next message is a single byte (the answer to an SSLRequest).
    pub fn expect_byte(&mut self) {
        self.state = State::Byte;
    }

    /// True between messages.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header | State::Byte) && self.buf.is_empty()
    }

    /// Frames `data`, calling `out` per message.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Frame)) -> Result<(), BadLength> {
        while !data.is_empty() {
            match &mut self.state {
                State::Byte => {
                    out(Frame::Message(data[0], Vec::new()));
                    data = &data[1..];
                    self.state = State::Header;
                }
                State::Header => {
                    let want = if self.typed { 5 } else { 4 };
                    let n = (want - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    self.in_message += n as u64;
                    data = &data[n..];
                    if self.buf.len() < want {
                        continue;
                    }
                    let (kind, len) =
                        if self.typed { (self.buf[0], &self.buf[1..5]) } else { (0, &self.buf[..4]) };
                    let len = i64::from(i32::from_be_bytes(len.try_into().expect("4 bytes")));
                    if len < 4 {
                        return Err(BadLength(len));
                    }
                    let body = (len - 4) as u64;
                    self.buf.clear();
                    if body > self.max as u64 {
                        self.state = State::Skip { kind, len: body, left: body };
                    } else {
                        self.state = State::Body { kind, len: body as usize };
                    }
                    self.finish_if_empty(out);
                }
                State::Body { kind, len } => {
                    let n = (*len - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    self.in_message += n as u64;
                    data = &data[n..];
                    if self.buf.len() == *len {
                        let kind = *kind;
                        self.state = State::Header;
                        self.in_message = 0;
                        // After a v3 startup every message is typed (its
                        // followers may be in the same chunk).
                        self.typed |= self.buf.starts_with(&[0, 3]);
                        out(Frame::Message(kind, std::mem::take(&mut self.buf)));
                    }
                }
                State::Skip { kind, len, left } => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    self.in_message += n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        let (kind, len) = (*kind, *len);
                        self.state = State::Header;
                        self.in_message = 0;
                        out(Frame::Skipped(kind, len));
                    }
                }
            }
        }
        Ok(())
    }

    /// `len` bytes went missing: inside a skipped or kept body they are
    /// counted (true); elsewhere the framing is lost (false).
    pub fn gap(&mut self, len: u64, out: &mut impl FnMut(Frame)) -> bool {
        match &mut self.state {
            State::Skip { left, .. } if *left >= len => {
                *left -= len;
                true
            }
            State::Body { kind, len: body } if (*body - self.buf.len()) as u64 >= len => {
                // The message is lost; what remains of it is skipped.
                let left = (*body - self.buf.len()) as u64 - len;
                let (kind, body) = (*kind, *body as u64);
                self.buf.clear();
                self.state = State::Skip { kind, len: body, left };
                if left == 0 {
                    self.state = State::Header;
                    out(Frame::Skipped(kind, body));
                }
                true
            }
            _ => false,
        }
    }

    fn finish_if_empty(&mut self, out: &mut impl FnMut(Frame)) {
        if let State::Body { kind, len: 0 } = self.state {
            self.state = State::Header;
            self.in_message = 0;
            out(Frame::Message(kind, Vec::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_any_split_and_skips_what_is_over_the_bound() {
        let mut bytes = vec![0, 0, 0, 8, 0, 3, 0, 0]; // untyped startup: protocol 3.0, no parameters
        bytes.extend(b"Q\0\0\0\x0dSELECT 1\0");
        bytes.extend(b"S\0\0\0\x04");
        bytes.extend(b"D\0\0\0\x0e0123456789");
        for cut in 0..bytes.len() {
            let mut f = Framer::new(false, 9);
            let mut got = Vec::new();
            f.feed(&bytes[..cut], &mut |fr| got.push(fr)).unwrap();
            f.feed(&bytes[cut..], &mut |fr| got.push(fr)).unwrap();
            assert_eq!(
                got,
                vec![
                    Frame::Message(0, vec![0, 3, 0, 0]),
                    Frame::Message(b'Q', b"SELECT 1\0".to_vec()),
                    Frame::Message(b'S', vec![]),
                    Frame::Skipped(b'D', 10),
                ],
                "cut at {cut}"
            );
        }
        let mut f = Framer::new(true, 10);
        assert_eq!(f.feed(b"Q\0\0\0\x02", &mut |_| {}), Err(BadLength(2)));
    }
}

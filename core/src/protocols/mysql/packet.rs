//! MySQL packets: a 3-byte little-endian length, a sequence id, the
//! payload. Payloads up to a bound are handed out whole; a longer one (or
//! one split over 16 MiB continuation packets) is skipped and said.

/// One framed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Sequence id and payload.
    Whole(u8, Vec<u8>),
    /// Sequence id and length of a payload over the bound, not kept.
    Skipped(u8, u64),
}

#[derive(Debug)]
enum State {
    Header,
    Body { seq: u8, len: usize },
    Skip { seq: u8, len: u64, left: u64 },
}

/// Frames one direction.
#[derive(Debug)]
pub struct Framer {
    state: State,
    buf: Vec<u8>,
    max: usize,
    /// Bytes of the packet in progress.
    pub in_packet: u64,
}

impl Framer {
    /// Keeps payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { state: State::Header, buf: Vec::new(), max, in_packet: 0 }
    }

    /// True between packets.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.buf.is_empty()
    }

    /// Frames `data`, calling `out` per packet.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Packet)) {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    let n = (4 - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    self.in_packet += n as u64;
                    data = &data[n..];
                    if self.buf.len() < 4 {
                        continue;
                    }
                    let len = usize::from(self.buf[0])
                        | usize::from(self.buf[1]) << 8
                        | usize::from(self.buf[2]) << 16;
                    let seq = self.buf[3];
                    self.buf.clear();
                    self.state = if len > self.max || len == 0xff_ffff {
                        State::Skip { seq, len: len as u64, left: len as u64 }
                    } else {
                        State::Body { seq, len }
                    };
                    if len == 0 {
                        self.state = State::Header;
                        self.in_packet = 0;
                        out(Packet::Whole(seq, Vec::new()));
                    }
                }
                State::Body { seq, len } => {
                    let n = (*len - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    self.in_packet += n as u64;
                    data = &data[n..];
                    if self.buf.len() == *len {
                        let seq = *seq;
                        self.state = State::Header;
                        self.in_packet = 0;
                        out(Packet::Whole(seq, std::mem::take(&mut self.buf)));
                    }
                }
                State::Skip { seq, len, left } => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    self.in_packet += n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        let (seq, len) = (*seq, *len);
                        self.state = State::Header;
                        self.in_packet = 0;
                        out(Packet::Skipped(seq, len));
                    }
                }
            }
        }
    }

    /// `len` bytes went missing: inside a payload they cost that packet
    /// (true); elsewhere the framing is lost (false).
    pub fn gap(&mut self, len: u64, out: &mut impl FnMut(Packet)) -> bool {
        let (seq, total, left) = match &self.state {
            State::Skip { seq, len: total, left } => (*seq, *total, *left),
            State::Body { seq, len: total } => (*seq, *total as u64, (*total - self.buf.len()) as u64),
            State::Header => return false,
        };
        if left < len {
            return false;
        }
        self.buf.clear();
        self.state = State::Skip { seq, len: total, left: left - len };
        if left == len {
            self.state = State::Header;
            out(Packet::Skipped(seq, total));
        }
        true
    }
}

/// A cursor over a payload: MySQL's little-endian and length-encoded fields.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    /// A little-endian integer of `n` bytes (at most 8).
    pub fn uint(&mut self, n: usize) -> Option<u64> {
        Some(self.bytes(n)?.iter().rev().fold(0, |acc, &b| acc << 8 | u64::from(b)))
    }

    /// A length-encoded integer; `None` for the NULL marker 0xfb too.
    pub fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.uint(2),
            0xfd => self.uint(3),
            0xfe => self.uint(8),
            _ => None,
        }
    }

    /// A length-encoded string.
    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.bytes(n)
    }

    /// A NUL-terminated string (or the rest when there is no NUL).
    pub fn cstr(&mut self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = self.0.get(end + 1..).unwrap_or_default();
        s
    }

    /// The rest.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_any_split_and_skips_what_is_over_the_bound() {
        let mut bytes = vec![1, 0, 0, 0, 0x0e]; // COM_PING
        bytes.extend([5, 0, 0, 1, b'h', b'e', b'l', b'l', b'o']);
        bytes.extend([12, 0, 0, 2]);
        bytes.extend([7u8; 12]);
        bytes.extend([0, 0, 0, 3]);
        for cut in 0..=bytes.len() {
            let mut f = Framer::new(8);
            let mut got = Vec::new();
            f.feed(&bytes[..cut], &mut |p| got.push(p));
            f.feed(&bytes[cut..], &mut |p| got.push(p));
            assert_eq!(
                got,
                vec![
                    Packet::Whole(0, vec![0x0e]),
                    Packet::Whole(1, b"hello".to_vec()),
                    Packet::Skipped(2, 12),
                    Packet::Whole(3, vec![])
                ],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn length_encoded_fields() {
        let mut r = Reader(&[0xfa, 0xfc, 0x01, 0x02, 0xfb, 3, b'a', b'b', b'c', b'x', 0, b'y']);
        assert_eq!((r.lenenc(), r.lenenc(), r.lenenc()), (Some(250), Some(0x0201), None));
        assert_eq!(r.lenenc_bytes(), Some(&b"abc"[..]));
        assert_eq!((r.cstr(), r.cstr()), ("x".to_string(), "y".to_string()));
    }
}

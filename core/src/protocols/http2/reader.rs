//! One direction's bytes into frames, sans IO. DATA payloads are handed on
//! as they arrive (padding removed), so a large frame is never held; other
//! payloads are held up to a bound, beyond which the frame is skipped and
//! said to be oversized. A header that breaks its type's rules, or bytes
//! that never started at a boundary, put the reader into a search for the
//! next boundary (`sync`).

use super::frame::{flag, kind, Frame, FrameError, FrameHeader, HEADER_LEN};
use super::sync::{find, Search};

/// What the bytes held.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole frame other than DATA.
    Frame(Frame<'a>),
    /// Body bytes of a DATA frame (padding removed), as they arrive.
    Data {
        /// Stream.
        stream: u32,
        /// Bytes.
        data: &'a [u8],
    },
    /// A DATA frame ended (after its last `Data`).
    DataEnd {
        /// Stream.
        stream: u32,
        /// END_STREAM.
        end_stream: bool,
    },
    /// A frame larger than the reader keeps: skipped.
    Oversized(FrameHeader),
    /// A frame that breaks its type's rules: skipped; when its header was
    /// at fault the boundaries are lost and searched for again.
    Invalid(FrameHeader, FrameError),
    /// Bytes skipped while searching for a frame boundary.
    Skipped(u64),
}

/// What a gap of missing bytes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapOutcome {
    /// The bytes were inside a DATA frame: `bytes` of `stream`'s body are
    /// missing (the rest was padding), the boundaries are kept.
    Body {
        /// Stream.
        stream: u32,
        /// Body bytes missing.
        bytes: u64,
    },
    /// The bytes were inside a payload being skipped anyway.
    Skipped,
    /// The boundaries are lost: the reader searches for them again.
    Lost,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Gathering a header (`have` bytes of it so far).
    Header { have: usize },
    /// A padded DATA frame's pad length octet is next.
    DataPadLen { h: FrameHeader },
    /// Inside a DATA frame: body bytes, then padding.
    Data { h: FrameHeader, body: usize, pad: usize },
    /// Gathering a non-DATA payload into `buf`.
    Payload { h: FrameHeader },
    /// Skipping `left` payload bytes.
    Skip { left: usize },
    /// Searching `buf` for a frame boundary.
    Sync,
}

/// Frames of one direction.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    head: [u8; HEADER_LEN],
    buf: Vec<u8>,
    /// Bytes a search found after a boundary, to be read as frames next.
    pending: Option<Vec<u8>>,
    max_payload: usize,
}

impl FrameReader {
    /// A reader at a frame boundary, holding non-DATA payloads of at most
    /// `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            state: State::Header { have: 0 },
            head: [0; HEADER_LEN],
            buf: Vec::new(),
            pending: None,
            max_payload,
        }
    }

    /// A reader whose first byte is not known to start a frame.
    pub fn midstream(max_payload: usize) -> Self {
        Self { state: State::Sync, ..Self::new(max_payload) }
    }

    /// True unless searching for a frame boundary.
    pub fn synced(&self) -> bool {
        !matches!(self.state, State::Sync)
    }

    /// Bytes held (a partial payload or a search window).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes of the direction.
    pub fn feed(&mut self, data: &[u8], out: &mut impl FnMut(Event<'_>)) {
        self.run(data, out);
        // Iterative, not recursive: a search may hand back bytes many times.
        while let Some(rest) = self.pending.take() {
            self.run(&rest, out);
        }
    }

    /// `len` bytes of the direction are missing.
    pub fn gap(&mut self, len: u64, out: &mut impl FnMut(Event<'_>)) -> GapOutcome {
        match &mut self.state {
            State::Data { h, body, pad } if len <= (*body + *pad) as u64 => {
                let len = len as usize;
                let missing = len.min(*body);
                *body -= missing;
                *pad -= len - missing;
                let h = *h;
                if *body == 0 && *pad == 0 {
                    self.end_data(h, out);
                }
                GapOutcome::Body { stream: h.stream, bytes: missing as u64 }
            }
            State::Skip { left } if len <= *left as u64 => {
                *left -= len as usize;
                if *left == 0 {
                    self.state = State::Header { have: 0 };
                }
                GapOutcome::Skipped
            }
            _ => {
                self.lose_sync(&[]);
                GapOutcome::Lost
            }
        }
    }

    fn lose_sync(&mut self, keep: &[u8]) {
        self.state = State::Sync;
        self.buf.clear();
        self.buf.extend_from_slice(keep);
    }

    fn end_data(&mut self, h: FrameHeader, out: &mut impl FnMut(Event<'_>)) {
        self.state = State::Header { have: 0 };
        out(Event::DataEnd { stream: h.stream, end_stream: h.flags & flag::END_STREAM != 0 });
    }

    fn run(&mut self, mut data: &[u8], out: &mut impl FnMut(Event<'_>)) {
        while !data.is_empty() {
            match self.state {
                State::Header { have } => {
                    let n = (HEADER_LEN - have).min(data.len());
                    self.head[have..have + n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    if have + n < HEADER_LEN {
                        self.state = State::Header { have: have + n };
                    } else {
                        self.on_header(out);
                    }
                }
                State::DataPadLen { h } => {
                    let pad = usize::from(data[0]);
                    data = &data[1..];
                    if pad >= h.len {
                        out(Event::Invalid(h, FrameError::BadPadding("DATA")));
                        self.lose_sync(&[]);
                        continue;
                    }
                    self.state = State::Data { h, body: h.len - 1 - pad, pad };
                    if h.len == 1 {
                        self.end_data(h, out);
                    }
                }
                State::Data { h, mut body, mut pad } => {
                    let n = body.min(data.len());
                    if n > 0 {
                        out(Event::Data { stream: h.stream, data: &data[..n] });
                        body -= n;
                        data = &data[n..];
                    }
                    let p = pad.min(data.len());
                    pad -= p;
                    data = &data[p..];
                    self.state = State::Data { h, body, pad };
                    if body == 0 && pad == 0 {
                        self.end_data(h, out);
                    }
                }
                State::Payload { h } => {
                    let n = (h.len - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() == h.len {
                        self.on_payload(h, out);
                    }
                }
                State::Skip { left } => {
                    let n = left.min(data.len());
                    data = &data[n..];
                    self.state =
                        if n == left { State::Header { have: 0 } } else { State::Skip { left: left - n } };
                }
                State::Sync => {
                    self.buf.extend_from_slice(data);
                    let (skip, found) = match find(&self.buf) {
                        Search::Found(p) => (p, true),
                        Search::Wait(p) => (p, false),
                    };
                    if skip > 0 {
                        out(Event::Skipped(skip as u64));
                        self.buf.drain(..skip);
                    }
                    if found {
                        self.state = State::Header { have: 0 };
                        self.pending = Some(std::mem::take(&mut self.buf));
                    }
                    return;
                }
            }
        }
    }

    fn on_header(&mut self, out: &mut impl FnMut(Event<'_>)) {
        let h = FrameHeader::parse(&self.head).expect("9 bytes");
        if h.kind <= kind::CONTINUATION {
            if let Err(e) = h.check() {
                out(Event::Invalid(h, e));
                // The search starts again just after this header's first byte.
                let head = self.head;
                self.lose_sync(&head[1..]);
                return;
            }
        }
        self.state = match h.kind {
            kind::DATA if h.flags & flag::PADDED != 0 => State::DataPadLen { h },
            kind::DATA => State::Data { h, body: h.len, pad: 0 },
            _ if h.len > self.max_payload => {
                out(Event::Oversized(h));
                State::Skip { left: h.len }
            }
            _ => {
                self.buf.clear();
                State::Payload { h }
            }
        };
        match self.state {
            State::Data { h, body: 0, .. } => self.end_data(h, out),
            State::Payload { h } if h.len == 0 => self.on_payload(h, out),
            State::Skip { left: 0 } => self.state = State::Header { have: 0 },
            _ => {}
        }
    }

    fn on_payload(&mut self, h: FrameHeader, out: &mut impl FnMut(Event<'_>)) {
        self.state = State::Header { have: 0 };
        match Frame::parse(&h, &self.buf) {
            Ok(f) => out(Event::Frame(f)),
            // The length was right, so the next header is where it should be.
            Err(e) => out(Event::Invalid(h, e)),
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::tests::frame;
    use super::super::frame::PREFACE;
    use super::*;

    /// Events as owned values, DATA pieces merged per frame (with
    /// END_STREAM once the frame ended).
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Frame(String),
        Data(u32, Vec<u8>, Option<bool>),
        Oversized(u8),
        Invalid(u8),
        Skipped(u64),
    }

    fn collect(got: &mut Vec<Got>, e: Event<'_>) {
        match e {
            Event::Frame(f) => got.push(Got::Frame(format!("{f:?}"))),
            Event::Data { stream, data } => match got.last_mut() {
                Some(Got::Data(s, d, None)) if *s == stream => d.extend_from_slice(data),
                _ => got.push(Got::Data(stream, data.to_vec(), None)),
            },
            Event::DataEnd { stream, end_stream } => match got.last_mut() {
                Some(Got::Data(s, _, end @ None)) if *s == stream => *end = Some(end_stream),
                _ => got.push(Got::Data(stream, vec![], Some(end_stream))),
            },
            Event::Oversized(h) => got.push(Got::Oversized(h.kind)),
            Event::Invalid(h, _) => got.push(Got::Invalid(h.kind)),
            Event::Skipped(n) => got.push(Got::Skipped(n)),
        }
    }

    fn read(r: &mut FrameReader, parts: &[&[u8]]) -> Vec<Got> {
        let mut got = Vec::new();
        for p in parts {
            r.feed(p, &mut |e| collect(&mut got, e));
        }
        got
    }

    fn sample() -> Vec<u8> {
        let mut b = frame(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 16, 0]);
        let padded = [&[2u8][..], b"hello", &[0, 0]].concat();
        b.extend(frame(kind::DATA, flag::PADDED | flag::END_STREAM, 3, &padded));
        b.extend(frame(kind::HEADERS, flag::END_HEADERS, 5, &[0x82]));
        b.extend(frame(kind::DATA, flag::END_STREAM, 5, b""));
        b.extend(frame(0x20, 0, 0, b"unknown types are skipped"));
        b.extend(frame(kind::PING, 0, 0, &[1; 8]));
        b
    }

    #[test]
    fn any_three_way_split_gives_the_same_frames() {
        let b = sample();
        let whole = read(&mut FrameReader::new(1024), &[&b]);
        assert_eq!(whole.len(), 6, "{whole:?}");
        assert_eq!(whole[1], Got::Data(3, b"hello".to_vec(), Some(true)));
        assert_eq!(whole[3], Got::Data(5, vec![], Some(true)));
        for a in 0..=b.len() {
            for c in a..=b.len() {
                let got = read(&mut FrameReader::new(1024), &[&b[..a], &b[a..c], &b[c..]]);
                assert_eq!(got, whole, "split at {a}, {c}");
            }
        }
    }

    #[test]
    fn large_payloads_are_skipped_and_data_is_never_held() {
        let mut b = frame(kind::HEADERS, flag::END_HEADERS, 1, &[0; 100]);
        b.extend(frame(kind::DATA, 0, 1, &[7; 5000]));
        b.extend(frame(kind::PING, 0, 0, &[0; 8]));
        let mut r = FrameReader::new(64);
        let mut held = 0;
        let mut got = Vec::new();
        for piece in b.chunks(100) {
            r.feed(piece, &mut |e| collect(&mut got, e));
            held = held.max(r.buffered());
        }
        assert_eq!(got[0], Got::Oversized(kind::HEADERS));
        assert_eq!(got[1], Got::Data(1, vec![7; 5000], Some(false)));
        assert!(matches!(&got[2], Got::Frame(f) if f.starts_with("Ping")));
        assert!(held <= 64, "held {held}");
    }

    #[test]
    fn a_broken_header_is_searched_past_and_midstream_starts_at_a_boundary() {
        let b = sample();
        // SETTINGS on stream 1 breaks the rules: skipped up to the next boundary.
        let mut bad = frame(kind::SETTINGS, 0, 1, &[]);
        bad.extend(&b);
        let got = read(&mut FrameReader::new(1024), &[&bad]);
        assert_eq!(got[0], Got::Invalid(kind::SETTINGS));
        assert_eq!(got[1], Got::Skipped(8));
        assert_eq!(&got[2..], &read(&mut FrameReader::new(1024), &[&b])[..]);
        // Joined inside the SETTINGS payload: the DATA frame is the first seen.
        for cut in 10..15 {
            let mut r = FrameReader::midstream(1024);
            let got = read(&mut r, &[&b[cut..]]);
            assert_eq!(got[0], Got::Skipped(15 - cut as u64), "cut {cut}");
            assert_eq!(got[1], Got::Data(3, b"hello".to_vec(), Some(true)));
            assert!(r.synced());
        }
        // The preface is not a frame: a reader joined there skips it.
        let mut p = PREFACE.to_vec();
        p.extend(&b);
        assert_eq!(read(&mut FrameReader::midstream(1024), &[&p])[0], Got::Skipped(PREFACE.len() as u64));
    }

    #[test]
    fn gaps_inside_data_keep_the_boundaries() {
        let b = sample();
        let mut r = FrameReader::new(1024);
        let mut got = Vec::new();
        // Up to the 2nd body byte of the padded DATA frame (header at 15, pad length at 24).
        r.feed(&b[..27], &mut |e| collect(&mut got, e));
        // 3 body bytes and 1 of padding missing.
        assert_eq!(r.gap(4, &mut |e| collect(&mut got, e)), GapOutcome::Body { stream: 3, bytes: 3 });
        r.feed(&b[31..], &mut |e| collect(&mut got, e));
        assert_eq!(got[1], Got::Data(3, b"he".to_vec(), Some(true)));
        assert_eq!(got.len(), 6);
        // A gap across a boundary loses it; the next frames are found again.
        let mut r = FrameReader::new(1024);
        r.feed(&b[..10], &mut |_| {});
        assert_eq!(r.gap(30, &mut |_| {}), GapOutcome::Lost);
        assert!(!r.synced());
        let got = read(&mut r, &[&b[40..]]);
        assert!(r.synced());
        assert!(got.iter().any(|g| matches!(g, Got::Frame(f) if f.starts_with("Ping"))), "{got:?}");
    }
}

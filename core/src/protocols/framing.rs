//! Length-prefixed framing for the protocols whose every message starts
//! with a fixed-size head that says how long the rest is (Kafka's 4-byte
//! size, MongoDB's 16-byte header). Frames up to a bound are kept whole;
//! longer ones keep their first bytes and count the rest. A direction whose
//! framing is lost (a length that makes no sense, a gap between frames)
//! passes its bytes on raw until its session sees a chunk that starts a
//! frame again.

use super::db::DbOutput;
use std::ops::Range;

/// Bytes of an oversized frame's body kept, at least, for its head.
pub const HEAD_KEPT: usize = 4096;

/// What a head says: the length of the body after it, or `None` when it
/// makes no sense.
pub type BodyLen = fn(&[u8]) -> Option<u64>;

/// A whole frame (or its first bytes, when it was larger than the bound).
#[derive(Debug)]
pub struct Frame {
    /// The head, as read.
    pub head: Vec<u8>,
    /// The body's bytes kept.
    pub body: Vec<u8>,
    /// The body's length.
    pub body_len: u64,
    /// Body bytes beyond what `body` keeps.
    pub skipped: u64,
    /// Ranges of `body` that never came (zeros stand in).
    pub holes: Vec<Range<usize>>,
    /// Time of the chunk with its first byte.
    pub start_ts: u64,
    /// Time of the chunk with its last byte.
    pub end_ts: u64,
}

/// One direction's framing.
#[derive(Debug)]
pub struct Framer {
    head_len: usize,
    body_len_of: BodyLen,
    head: Vec<u8>,
    /// The body's length once the head is in.
    body_len: Option<u64>,
    body: Vec<u8>,
    skipped: u64,
    holes: Vec<Range<usize>>,
    start_ts: u64,
    /// Framing lost: bytes pass on raw until a chunk starts a frame.
    pub lost: bool,
}

impl Framer {
    /// Frames with heads of `head_len` bytes, read by `body_len_of`.
    pub fn new(head_len: usize, body_len_of: BodyLen) -> Self {
        Self {
            head_len,
            body_len_of,
            head: Vec::new(),
            body_len: None,
            body: Vec::new(),
            skipped: 0,
            holes: Vec::new(),
            start_ts: 0,
            lost: false,
        }
    }

    /// True between frames (and not lost).
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.head.is_empty() && self.body_len.is_none()
    }

    /// Forgets the frame in progress; `lost` says whether the framing is lost.
    pub fn reset(&mut self, lost: bool) {
        *self = Self { lost, ..Self::new(self.head_len, self.body_len_of) };
    }

    /// Bytes of the frame in progress.
    pub fn in_frame(&self) -> u64 {
        let head = if self.body_len.is_some() { self.head_len } else { self.head.len() };
        (head + self.body.len()) as u64 + self.skipped
    }

    /// Frames `data`, keeping at most `max` (or [`HEAD_KEPT`]) body bytes
    /// per frame; `Err(at)` when a head makes no sense, that head ending at
    /// offset `at` of `data`.
    pub fn feed(&mut self, mut data: &[u8], ts: u64, max: usize, out: &mut Vec<Frame>) -> Result<(), usize> {
        let total = data.len();
        while !data.is_empty() {
            if self.head.is_empty() && self.body_len.is_none() {
                self.start_ts = ts;
            }
            let Some(len) = self.body_len else {
                let n = (self.head_len - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.head.len() == self.head_len {
                    let Some(len) = (self.body_len_of)(&self.head) else { return Err(total - data.len()) };
                    self.body_len = Some(len);
                    self.complete(ts, out);
                }
                continue;
            };
            let want = len - self.skipped - self.body.len() as u64;
            let n = want.min(data.len() as u64) as usize;
            let keep = n.min(max.max(HEAD_KEPT).saturating_sub(self.body.len()));
            self.body.extend_from_slice(&data[..keep]);
            self.skipped += (n - keep) as u64;
            data = &data[n..];
            self.complete(ts, out);
        }
        Ok(())
    }

    /// Frames `data` as [`Framer::feed`] does; when a head makes no sense
    /// the framing is lost, and what to say after the frames is returned: a
    /// `reason` drop counting the frame's bytes up to its head's end, and
    /// the rest of the chunk raw.
    pub fn feed_or_lose(
        &mut self,
        data: &[u8],
        ts: u64,
        max: usize,
        reason: &'static str,
        frames: &mut Vec<Frame>,
    ) -> Vec<DbOutput> {
        let carried = self.in_frame();
        let Err(at) = self.feed(data, ts, max, frames) else { return Vec::new() };
        self.reset(true);
        let earlier = if at <= self.head_len { carried } else { 0 };
        vec![
            DbOutput::Drop { reason, bytes: earlier + at.min(self.head_len) as u64 },
            DbOutput::Raw(at.min(data.len())..data.len()),
        ]
    }

    fn complete(&mut self, ts: u64, out: &mut Vec<Frame>) {
        let Some(len) = self.body_len else { return };
        if len == self.body.len() as u64 + self.skipped {
            out.push(Frame {
                head: std::mem::take(&mut self.head),
                body: std::mem::take(&mut self.body),
                body_len: len,
                skipped: std::mem::take(&mut self.skipped),
                holes: std::mem::take(&mut self.holes),
                start_ts: self.start_ts,
                end_ts: ts,
            });
            self.body_len = None;
        }
    }

    /// `len` bytes never came. Inside a frame's body zeros stand in (their
    /// ranges in the frame's `holes`) and the frame goes on (true);
    /// elsewhere the framing is lost (false, the caller's to say).
    pub fn fill(&mut self, len: u64, ts: u64, max: usize, out: &mut Vec<Frame>) -> bool {
        let Some(body_len) = self.body_len.filter(|_| !self.lost) else { return false };
        if self.body.len() as u64 + self.skipped + len > body_len {
            return false;
        }
        let at = self.body.len();
        let keep = (len.min(max.max(HEAD_KEPT).saturating_sub(at) as u64)) as usize;
        self.body.resize(at + keep, 0);
        self.holes.push(at..at + len as usize);
        self.skipped += len - keep as u64;
        self.complete(ts, out);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's head: a big-endian size of what follows.
    fn size(head: &[u8]) -> Option<u64> {
        u64::try_from(i32::from_be_bytes(head.try_into().ok()?)).ok()
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        [&(body.len() as i32).to_be_bytes()[..], body].concat()
    }

    /// A frame's body kept, its length and the bytes skipped.
    type Got = (Vec<u8>, u64, u64);

    fn run(f: &mut Framer, pieces: &[&[u8]], max: usize) -> (Vec<Got>, Vec<DbOutput>) {
        let (mut frames, mut out) = (Vec::new(), Vec::new());
        for (i, p) in pieces.iter().enumerate() {
            out.extend(f.feed_or_lose(p, i as u64, max, "test_parse_error", &mut frames));
        }
        (frames.into_iter().map(|f| (f.body, f.body_len, f.skipped)).collect(), out)
    }

    #[test]
    fn frames_any_split_and_keeps_the_head_of_what_is_over_the_bound() {
        let long = vec![7u8; HEAD_KEPT + 10];
        let bytes = [frame(b"abc"), frame(b""), frame(&long), frame(b"z")].concat();
        let want = vec![
            (b"abc".to_vec(), 3, 0),
            (vec![], 0, 0),
            (long[..HEAD_KEPT].to_vec(), long.len() as u64, 10),
            (b"z".to_vec(), 1, 0),
        ];
        for cut in 0..=bytes.len() {
            let mut f = Framer::new(4, size);
            let (got, out) = run(&mut f, &[&bytes[..cut], &bytes[cut..]], 16);
            assert_eq!((got, out.is_empty()), (want.clone(), true), "cut {cut}");
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn a_senseless_head_is_a_counted_drop_and_the_rest_raw() {
        let mut f = Framer::new(4, size);
        let mut bytes = frame(b"ok");
        bytes.extend([0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        // The bad head's first byte came in the chunk before.
        let (got, out) = run(&mut f, &[&bytes[..7], &bytes[7..]], 16);
        assert_eq!(got, vec![(b"ok".to_vec(), 2, 0)]);
        assert_eq!(out, vec![DbOutput::Drop { reason: "test_parse_error", bytes: 4 }, DbOutput::Raw(3..6)]);
        assert!(f.lost && !f.at_boundary());
    }

    #[test]
    fn a_gap_inside_a_body_is_filled_and_elsewhere_loses_the_framing() {
        let mut f = Framer::new(4, size);
        let bytes = frame(b"abcdef");
        let mut frames = Vec::new();
        f.feed(&bytes[..6], 1, 16, &mut frames).unwrap();
        assert!(f.fill(3, 2, 16, &mut frames));
        f.feed(&bytes[9..], 3, 16, &mut frames).unwrap();
        assert_eq!(frames[0].body, b"ab\0\0\0f");
        assert_eq!(frames[0].holes.iter().map(|h| (h.start, h.end)).collect::<Vec<_>>(), [(2, 5)]);
        assert_eq!((frames[0].start_ts, frames[0].end_ts), (1, 3));
        assert!(!f.fill(1, 4, 16, &mut frames), "between frames");
    }
}

//! Finding frame boundaries in bytes that did not start at one: a
//! connection joined mid-stream, or bytes lost in a gap. A frame header
//! carries no marker, so a boundary is taken where headers that a sender
//! following RFC 9113 could have written follow each other: two in a row, or
//! frames that end exactly where the bytes at hand end (a write of whole
//! frames). Random payload bytes pass both tests with negligible odds.

use super::frame::{flag, kind, FrameHeader, DEFAULT_MAX_FRAME, HEADER_LEN};

/// Stream ids at or above this are not taken for a boundary: clients
/// number streams 1, 3, 5…, so 2^24 is millions of requests on one
/// connection, while shifted zero bytes readily look like huge ids.
const MAX_PLAUSIBLE_STREAM: u32 = 1 << 24;

/// A header a sender would write at `b[0]`: a known type following its
/// rules, the reserved bit clear, no larger than every peer accepts, a
/// plausible stream id, no pointless empty frames (what zero bytes shifted
/// by one look like), and, where the payload is at hand, sane contents.
fn plausible(b: &[u8]) -> Option<FrameHeader> {
    let h = FrameHeader::parse(b)?;
    if h.reserved || h.len > DEFAULT_MAX_FRAME || h.stream >= MAX_PLAUSIBLE_STREAM || h.check().is_err() {
        return None;
    }
    let empty_pointless = match h.kind {
        kind::DATA => h.flags & flag::END_STREAM == 0,
        kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => true,
        _ => false,
    };
    if h.len == 0 && empty_pointless {
        return None;
    }
    let payload = &b[HEADER_LEN..b.len().min(HEADER_LEN + h.len)];
    if payload.len() == h.len && !sane_payload(&h, payload) {
        return None;
    }
    let padded = h.flags & flag::PADDED != 0;
    if padded && payload.first().is_some_and(|&pad| usize::from(pad) >= h.len) {
        return None;
    }
    Some(h)
}

/// Contents no sender writes: an error code it does not define, a zero
/// window increment (a protocol error), a SETTINGS id it does not define.
fn sane_payload(h: &FrameHeader, p: &[u8]) -> bool {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match h.kind {
        kind::RST_STREAM => be32(p) <= 13,
        kind::GOAWAY => be32(&p[4..]) <= 13,
        kind::WINDOW_UPDATE => be32(p) & 0x7fff_ffff != 0,
        kind::SETTINGS => {
            p.as_chunks::<6>().0.iter().all(|s| (1..=9).contains(&u16::from_be_bytes([s[0], s[1]])))
        }
        _ => true,
    }
}

/// Whether frames start at `b[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// They do.
    Frames,
    /// They do not.
    Not,
    /// Too few bytes to tell.
    NeedMore,
}

/// Whether frames start at `b[0]`: two plausible headers in a row, or
/// plausible frames ending exactly at the end of `b`.
pub fn frames_at(b: &[u8]) -> Verdict {
    let (mut at, mut n) = (0, 0);
    loop {
        if n >= 2 || (n > 0 && at == b.len()) {
            return Verdict::Frames;
        }
        if b.len() - at < HEADER_LEN {
            return Verdict::NeedMore;
        }
        let Some(h) = plausible(&b[at..]) else { return Verdict::Not };
        n += 1;
        at += HEADER_LEN + h.len;
        if at > b.len() {
            return if n >= 2 { Verdict::Frames } else { Verdict::NeedMore };
        }
    }
}

/// Where in `b` frames start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// At this offset.
    Found(usize),
    /// Not before this offset; more bytes are needed to tell from there.
    /// The bytes kept from it are fewer than a largest plausible frame and
    /// two headers, since such a frame is decided within them.
    Wait(usize),
}

/// The first offset of `b` where frames start for sure; else the first
/// where they may, once more bytes come (more bytes never turn a rejected
/// offset into a boundary, so what is before it can go). A sure boundary
/// wins over an earlier undecided one: a real header shifted by a byte
/// often reads as a plausible DATA header, and waiting for its made-up
/// length would hold up the real boundary behind it.
pub fn find(b: &[u8]) -> Search {
    let mut undecided = None;
    for p in 0..b.len() {
        match frames_at(&b[p..]) {
            Verdict::Frames => return Search::Found(p),
            Verdict::NeedMore => {
                undecided.get_or_insert(p);
            }
            Verdict::Not => {}
        }
    }
    Search::Wait(undecided.unwrap_or(b.len()))
}

#[cfg(test)]
mod tests {
    use super::super::frame::tests::frame;
    use super::*;

    fn frames() -> Vec<u8> {
        let mut b = frame(kind::DATA, 0, 1, &[0xab; 300]);
        b.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        b.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x82, 0x84]));
        b
    }

    #[test]
    fn two_headers_or_an_exact_end_make_a_boundary() {
        let b = frames();
        assert_eq!(frames_at(&b), Verdict::Frames);
        assert_eq!(frames_at(&frame(kind::PING, 0, 0, &[0; 8])), Verdict::Frames, "one whole write");
        assert_eq!(frames_at(&b[..100]), Verdict::NeedMore, "the first frame is not over");
        assert_eq!(frames_at(&b[..5]), Verdict::NeedMore);
        assert_eq!(frames_at(&b[1..]), Verdict::Not);
        assert_eq!(frames_at(&frame(kind::DATA, flag::PADDED, 1, &[9, 1, 2])), Verdict::Not, "bad padding");
        let mut reserved = frame(kind::PING, 0, 0, &[0; 8]);
        reserved[5] = 0x80;
        assert_eq!(frames_at(&reserved), Verdict::Not);
        assert_eq!(frames_at(&frame(kind::DATA, 0, 5, &[])), Verdict::Not, "empty and not ending");
        assert_eq!(frames_at(&frame(kind::DATA, flag::END_STREAM, 5, &[])), Verdict::Frames);
        assert_eq!(frames_at(&frame(kind::DATA, 0, 1 << 24, b"x")), Verdict::Not);
        assert_eq!(frames_at(&frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4])), Verdict::Not);
        assert_eq!(frames_at(&frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 99])), Verdict::Not);
        assert_eq!(frames_at(&frame(kind::SETTINGS, 0, 0, &[0, 42, 0, 0, 0, 0])), Verdict::Not);
        assert_eq!(frames_at(&frame(kind::DATA, 0, 1, &vec![0; DEFAULT_MAX_FRAME + 1])), Verdict::Not);
    }

    #[test]
    fn boundaries_are_found_after_any_cut_of_a_payload() {
        let b = frames();
        // Cut anywhere inside the DATA payload: the next boundary is the
        // WINDOW_UPDATE at 309, never a guess inside the payload.
        for cut in 1..309 {
            assert_eq!(find(&b[cut..]), Search::Found(309 - cut), "cut at {cut}");
        }
        assert_eq!(find(&b), Search::Found(0));
        // A frame header cut short: wait for the rest.
        assert_eq!(find(&b[309..315]), Search::Wait(0));
        assert_eq!(find(&[0xff; 20]), Search::Wait(12));
    }
}

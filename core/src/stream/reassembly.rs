//! One direction of a connection, back in order. Chunks arrive by `seq`,
//! mostly in order (the ring buffer is shared by all CPUs, so two calls on
//! different CPUs can swap). In-order bytes pass straight through without a
//! copy; early chunks wait, bounded; bytes that will never come (truncated
//! calls, dropped records) become a `Gap` so the parser can resynchronise.

use std::collections::BTreeMap;

/// What the reassembler hands on, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// Contiguous bytes starting at `seq`.
    Bytes {
        /// Offset of `data[0]` in this direction.
        seq: u64,
        /// Event time of the chunk these bytes came in.
        ts_ns: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// `len` bytes at `seq` are missing for good.
    Gap {
        /// Offset of the first missing byte.
        seq: u64,
        /// How many.
        len: u64,
    },
}

/// Reassembly state of one direction.
#[derive(Debug)]
pub struct Reassembler {
    next: Option<u64>,
    early: BTreeMap<u64, (u64, Vec<u8>, u64)>, // seq → (ts, bytes, truncated after)
    early_bytes: usize,
    limit: usize,
}

impl Reassembler {
    /// Holds at most `limit` bytes of early chunks before declaring a gap.
    pub fn new(limit: usize) -> Self {
        Self { next: None, early: BTreeMap::new(), early_bytes: 0, limit }
    }

    /// Expects the first byte at `seq` (a direction seen from its start):
    /// chunks arriving before it wait for it.
    pub fn expect(&mut self, seq: u64) {
        self.next.get_or_insert(seq);
    }

    /// The bound on early bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes waiting for an earlier chunk.
    pub fn buffered(&self) -> usize {
        self.early_bytes
    }

    /// Offset of the next byte expected, once anything was seen.
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// Accepts a chunk of `data` at `seq`, followed by `truncated` bytes that
    /// were never captured, and delivers whatever is now in order.
    pub fn push(
        &mut self,
        seq: u64,
        ts_ns: u64,
        data: &[u8],
        truncated: u64,
        out: &mut impl FnMut(Delivery<'_>),
    ) {
        let next = *self.next.get_or_insert(seq);
        let end = seq + data.len() as u64;
        if end + truncated <= next {
            return; // already delivered (or declared missing)
        }
        if seq > next {
            if self.early_bytes + data.len() > self.limit {
                self.flush(out); // deliver what waits, declaring the holes
                let next = self.next.unwrap_or(seq);
                if seq > next {
                    out(Delivery::Gap { seq: next, len: seq - next });
                    self.next = Some(seq);
                }
                return self.push(seq, ts_ns, data, truncated, out);
            }
            self.early_bytes += data.len();
            self.early.insert(seq, (ts_ns, data.to_vec(), truncated));
            return;
        }
        // Overlaps or starts at `next`: deliver the new part.
        let skip = (next - seq).min(data.len() as u64) as usize;
        if skip < data.len() {
            out(Delivery::Bytes { seq: next, ts_ns, data: &data[skip..] });
        }
        self.advance_past(end, truncated, out);
        self.drain_early(out);
    }

    fn advance_past(&mut self, end: u64, truncated: u64, out: &mut impl FnMut(Delivery<'_>)) {
        let next = self.next.unwrap_or(end).max(end);
        if truncated > 0 && end + truncated > next {
            out(Delivery::Gap { seq: next, len: end + truncated - next });
            self.next = Some(end + truncated);
        } else {
            self.next = Some(next);
        }
    }

    fn drain_early(&mut self, out: &mut impl FnMut(Delivery<'_>)) {
        while let Some(entry) = self.early.first_entry() {
            let next = self.next.unwrap_or(0);
            if *entry.key() > next {
                break;
            }
            let (seq, (ts, data, truncated)) = entry.remove_entry();
            self.early_bytes -= data.len();
            let end = seq + data.len() as u64;
            let skip = (next - seq).min(data.len() as u64) as usize;
            if skip < data.len() {
                out(Delivery::Bytes { seq: next, ts_ns: ts, data: &data[skip..] });
            }
            self.advance_past(end, truncated, out);
        }
    }

    /// Gives up waiting: every hole before a waiting chunk becomes a `Gap`
    /// and everything waiting is delivered. Called when the chunks that
    /// could fill the holes can no longer arrive (a timer, a close).
    pub fn flush(&mut self, out: &mut impl FnMut(Delivery<'_>)) {
        while let Some((&seq, _)) = self.early.first_key_value() {
            let next = self.next.unwrap_or(seq);
            if seq > next {
                out(Delivery::Gap { seq: next, len: seq - next });
                self.next = Some(seq);
            }
            self.drain_early(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum D {
        B(u64, Vec<u8>),
        G(u64, u64),
    }

    fn run(r: &mut Reassembler, seq: u64, data: &[u8], truncated: u64) -> Vec<D> {
        let mut got = Vec::new();
        r.push(seq, 0, data, truncated, &mut |d| {
            got.push(match d {
                Delivery::Bytes { seq, data, .. } => D::B(seq, data.to_vec()),
                Delivery::Gap { seq, len } => D::G(seq, len),
            })
        });
        got
    }

    #[test]
    fn in_order_passes_through() {
        let mut r = Reassembler::new(1024);
        assert_eq!(run(&mut r, 5, b"abc", 0), vec![D::B(5, b"abc".to_vec())]);
        assert_eq!(run(&mut r, 8, b"de", 0), vec![D::B(8, b"de".to_vec())]);
    }

    #[test]
    fn early_chunks_wait_for_the_hole() {
        let mut r = Reassembler::new(1024);
        run(&mut r, 0, b"ab", 0);
        assert_eq!(run(&mut r, 4, b"ef", 0), vec![]);
        assert_eq!(r.buffered(), 2);
        assert_eq!(run(&mut r, 2, b"cd", 0), vec![D::B(2, b"cd".to_vec()), D::B(4, b"ef".to_vec())]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn truncation_is_a_gap_at_once() {
        let mut r = Reassembler::new(1024);
        assert_eq!(run(&mut r, 0, b"ab", 3), vec![D::B(0, b"ab".to_vec()), D::G(2, 3)]);
        assert_eq!(run(&mut r, 5, b"f", 0), vec![D::B(5, b"f".to_vec())]);
    }

    #[test]
    fn overflow_declares_the_hole() {
        let mut r = Reassembler::new(4);
        run(&mut r, 0, b"a", 0);
        assert_eq!(run(&mut r, 3, b"dddd", 0), vec![]);
        let got = run(&mut r, 10, b"kk", 0);
        assert_eq!(got, vec![D::G(1, 2), D::B(3, b"dddd".to_vec()), D::G(7, 3), D::B(10, b"kk".to_vec())]);
    }

    #[test]
    fn flush_gives_up_on_holes() {
        let mut r = Reassembler::new(1024);
        run(&mut r, 0, b"a", 0);
        run(&mut r, 5, b"f", 0);
        let mut got = Vec::new();
        r.flush(&mut |d| got.push(format!("{d:?}")));
        assert_eq!(got.len(), 2);
        assert!(got[0].contains("Gap { seq: 1, len: 4 }"), "{got:?}");
    }

    #[test]
    fn duplicates_and_overlaps_deliver_each_byte_once() {
        let mut r = Reassembler::new(1024);
        run(&mut r, 0, b"abcd", 0);
        assert_eq!(run(&mut r, 0, b"abcd", 0), vec![]);
        assert_eq!(run(&mut r, 2, b"cdef", 0), vec![D::B(4, b"ef".to_vec())]);
    }

    #[test]
    fn any_arrival_order_gives_the_same_stream() {
        let stream: Vec<u8> = (0..200u8).collect();
        let cuts = [0usize, 3, 17, 18, 64, 100, 150, 200];
        let chunks: Vec<(u64, &[u8])> = cuts.windows(2).map(|w| (w[0] as u64, &stream[w[0]..w[1]])).collect();
        for rot in 0..chunks.len() {
            let mut order = chunks.clone();
            order.rotate_left(rot);
            order.swap(0, chunks.len() - 1 - rot.min(chunks.len() - 1));
            let mut r = Reassembler::new(1 << 20);
            let mut out = Vec::new();
            // The first chunk seen sets the start: begin with seq 0 as a real stream would.
            r.push(0, 0, &[], 0, &mut |_| {});
            for (seq, data) in order {
                r.push(seq, 0, data, 0, &mut |d| {
                    if let Delivery::Bytes { data, .. } = d {
                        out.extend_from_slice(data)
                    }
                });
            }
            assert_eq!(out, stream);
        }
    }
}

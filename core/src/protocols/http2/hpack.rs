//! HPACK (RFC 7541) for one direction, decoded with loona-hpack. The table
//! kept here is always the newest entries of the sender's table, in order:
//! it starts empty (which is right from the preface, and merely unknown when
//! joined mid-stream), grows with every block decoded, and is emptied again
//! whenever that can no longer be promised (a block lost or undecodable).
//! So an index either names the entry the sender meant or is out of range:
//! fields are decoded or said missing, never guessed.

use crate::protocols::exchange::Fields;
use loona_hpack::Decoder;

/// The table size both sides start with (SETTINGS_HEADER_TABLE_SIZE's
/// initial value).
const DEFAULT_TABLE: usize = 4096;

/// A decoded header block.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Fields in order (lossy UTF-8), as far as they could be decoded.
    pub fields: Fields,
    /// Every field of the block is in `fields`.
    pub complete: bool,
    /// The decoded fields were over the bound and the rest were not kept.
    pub over_limit: bool,
}

/// The HPACK decoder of one direction.
pub struct HeaderDecoder {
    inner: Decoder<'static>,
    table_size: usize,
    max_table: usize,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecoder").field("table_size", &self.table_size).finish_non_exhaustive()
    }
}

fn fresh(table_size: usize, max_table: usize) -> Decoder<'static> {
    let mut d = Decoder::new();
    // Size updates above the bound are errors, so the table never outgrows it.
    d.set_max_allowed_table_size(max_table);
    d.set_max_table_size(table_size.min(max_table));
    d
}

impl HeaderDecoder {
    /// A decoder with an empty table that never grows past `max_table`.
    pub fn new(max_table: usize) -> Self {
        let table_size = DEFAULT_TABLE.min(max_table);
        Self { inner: fresh(table_size, max_table), table_size, max_table }
    }

    /// The receiving peer announced SETTINGS_HEADER_TABLE_SIZE `size`. A
    /// table larger than the sender's only keeps entries the sender has
    /// already evicted (never referenced), and a smaller one makes some
    /// references out of range: neither misleads. False when `size` is over
    /// the bound kept.
    pub fn peer_table_size(&mut self, size: u32) -> bool {
        self.table_size = (size as usize).min(self.max_table);
        self.inner.set_max_table_size(self.table_size);
        size as usize <= self.max_table
    }

    /// The sender's table is unknown from here (a block was lost).
    pub fn forget(&mut self) {
        self.inner = fresh(self.table_size, self.max_table);
    }

    /// Decodes one whole header block, keeping at most `max_decoded` bytes
    /// of fields (counted as HPACK counts entries: name + value + 32), so a
    /// small block of references to a large entry cannot grow without bound.
    /// The whole block is still decoded, to keep the table in step.
    pub fn decode(&mut self, block: &[u8], max_decoded: usize) -> Decoded {
        let mut d = Decoded::default();
        let mut size = 0usize;
        let result = self.inner.decode_with_cb(block, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            if size > max_decoded {
                d.over_limit = true;
            } else {
                d.fields.push_lossy(&String::from_utf8_lossy(&name), &value);
            }
        });
        if result.is_err() {
            // Fields after the error may have changed the sender's table.
            self.forget();
        }
        d.complete = result.is_ok() && !d.over_limit;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn block(enc: &mut Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
        enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn names(d: &Decoded) -> Vec<(&str, &str)> {
        d.fields.iter().collect()
    }

    #[test]
    fn blocks_decode_in_order_with_the_dynamic_table() {
        let mut enc = Encoder::new();
        let mut dec = HeaderDecoder::new(64 << 10);
        let fields = [(":method", "GET"), (":path", "/x"), ("x-custom", "value")];
        for _ in 0..3 {
            let d = dec.decode(&block(&mut enc, &fields), 1 << 20);
            assert!(d.complete);
            assert_eq!(names(&d), fields);
        }
    }

    #[test]
    fn a_lost_block_makes_later_references_missing_never_wrong() {
        let mut enc = Encoder::new();
        let mut dec = HeaderDecoder::new(64 << 10);
        let first = block(&mut enc, &[("x-a", "1")]);
        assert!(dec.decode(&first, 1 << 20).complete);
        let _lost = block(&mut enc, &[("x-b", "2")]); // the encoder indexed x-b: 2
        dec.forget();
        // [x-b: 2, x-a: 1] in the sender's table; a reference to either is
        // now out of range, never the wrong entry; the literal decodes.
        let later = block(&mut enc, &[(":method", "GET"), ("x-a", "1"), ("x-new", "3")]);
        let d = dec.decode(&later, 1 << 20);
        assert!(!d.complete);
        assert_eq!(names(&d), [(":method", "GET")], "decoded up to the unknown reference");
        // An index past the (empty) dynamic table, joined mid-stream.
        let d = HeaderDecoder::new(4096).decode(&[0x82, 0xbe], 1 << 20);
        assert_eq!((names(&d), d.complete), (vec![(":method", "GET")], false));
    }

    #[test]
    fn decoded_size_is_bounded_and_table_size_settings_apply() {
        let mut enc = Encoder::new();
        let mut dec = HeaderDecoder::new(64 << 10);
        let big = "v".repeat(3000);
        assert!(dec.decode(&block(&mut enc, &[("x-big", &big)]), 1 << 20).complete);
        // 1000 one-byte references to the 3 KB entry: 3 MB if kept.
        let bomb = vec![0xbe; 1000];
        let d = dec.decode(&bomb, 64 << 10);
        assert!(d.over_limit && !d.complete);
        assert_eq!(d.fields.len(), (64 << 10) / (3000 + 5 + 32));
        // A size update above the bound is refused (and forgets the table).
        let mut small = HeaderDecoder::new(1024);
        assert!(!small.peer_table_size(1 << 20));
        let d = small.decode(&[0x3f, 0xe1, 0x1f, 0x82], 1 << 20); // size update to 4096, :method GET
        assert!(!d.complete && d.fields.is_empty());
        assert!(small.peer_table_size(512));
    }
}

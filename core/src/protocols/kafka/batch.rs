//! Record batches (message format v2, magic 2): the batch header, its
//! records (keys, values, headers), decompressed when the batch is gzip,
//! snappy (Kafka's xerial framing or a bare block), lz4 (frame format) or
//! zstd. Older message sets (magic 0 and 1) are counted, not decoded.

use super::wire::{Reader, WireError};
use std::io::Read;

/// One record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The batch's base offset plus the record's delta.
    pub offset: i64,
    /// The batch's base timestamp plus the record's delta (ms).
    pub timestamp: i64,
    /// `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// `None` for a null value (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Bytes of key and value past the bound, not kept.
    pub truncated: u64,
    /// Header names and values (`None`: a null value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What the record batches of one partition held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordSet {
    /// Records kept, in order.
    pub records: Vec<Record>,
    /// Records beyond the bound, counted.
    pub omitted: u64,
    /// Compression codecs of the batches (`none`, `gzip`, …), once each.
    pub compression: Vec<&'static str>,
    /// Producer id of the batches (-1: not idempotent).
    pub producer_id: Option<i64>,
    /// Batches not decoded: older message formats, an unknown codec,
    /// corrupt bytes (counted; the reason beside).
    pub undecoded: u64,
    /// Why the last undecoded batch was not.
    pub undecoded_reason: Option<&'static str>,
    /// Bytes of the set (what went over the wire).
    pub bytes: u64,
}

/// Bounds for one set: records kept, bytes per key or value, bytes a
/// compressed batch may grow to.
#[derive(Debug, Clone, Copy)]
pub struct SetLimits {
    /// Records kept per set.
    pub max_records: usize,
    /// Key or value bytes kept per record.
    pub max_value: usize,
    /// Bytes one batch may decompress to (the rest is not read).
    pub max_inflated: usize,
}

/// The codec of a batch's attributes.
pub fn codec_name(attributes: i16) -> &'static str {
    match attributes & 7 {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

const BATCH_HEADER: usize = 61;

/// Decodes the record batches of `data` (a partition's `records` field).
/// A last batch cut short (fetch responses end where the size limit did)
/// is not counted.
pub fn decode(data: &[u8], limits: SetLimits) -> RecordSet {
    let mut set = RecordSet { bytes: data.len() as u64, ..RecordSet::default() };
    let mut rest = data;
    while rest.len() >= 17 {
        let mut r = Reader::new(rest, false);
        let base_offset = r.i64().unwrap_or(0);
        let len = r.i32().unwrap_or(-1);
        if len < 0 {
            set.undecoded += 1;
            set.undecoded_reason = Some("bad batch length");
            break;
        }
        let total = 12 + len as usize;
        if total > rest.len() {
            break; // cut short by the fetch size: the next fetch has it whole
        }
        let batch = &rest[..total];
        rest = &rest[total..];
        let Some(&magic) = batch.get(16) else {
            set.undecoded += 1;
            set.undecoded_reason = Some("short batch");
            continue;
        };
        if magic != 2 {
            set.undecoded += 1;
            set.undecoded_reason = Some("message format before v2");
            continue;
        }
        if let Err(reason) = decode_batch(batch, base_offset, limits, &mut set) {
            set.undecoded += 1;
            set.undecoded_reason = Some(reason);
        }
    }
    set
}

fn decode_batch(
    batch: &[u8],
    base_offset: i64,
    limits: SetLimits,
    set: &mut RecordSet,
) -> Result<(), &'static str> {
    if batch.len() < BATCH_HEADER {
        return Err("short batch");
    }
    let mut r = Reader::new(&batch[21..], false);
    let short = |_: WireError| "short batch";
    let attributes = r.i16().map_err(short)?;
    let _last_offset_delta = r.i32().map_err(short)?;
    let base_ts = r.i64().map_err(short)?;
    let _max_ts = r.i64().map_err(short)?;
    let producer_id = r.i64().map_err(short)?;
    let _epoch = r.i16().map_err(short)?;
    let _base_sequence = r.i32().map_err(short)?;
    let count = r.i32().map_err(short)?;
    let codec = codec_name(attributes);
    if !set.compression.contains(&codec) {
        set.compression.push(codec);
    }
    if producer_id >= 0 || set.producer_id.is_none() {
        set.producer_id = Some(producer_id);
    }
    // A control batch (transaction markers) carries no application records.
    if attributes & 0x20 != 0 {
        return Ok(());
    }
    let inflated;
    let body = match codec {
        "none" => r.rest(),
        "unknown" => return Err("unknown compression codec"),
        c => {
            inflated = inflate(c, r.rest(), limits.max_inflated)?;
            inflated.as_slice()
        }
    };
    let mut r = Reader::new(body, false);
    for _ in 0..count.max(0) {
        if set.records.len() >= limits.max_records {
            set.omitted += 1;
            continue;
        }
        match record(&mut r, base_offset, base_ts, limits.max_value) {
            Ok(rec) => set.records.push(rec),
            // A batch inflated only up to the bound ends early: what is
            // left is counted, not an error.
            Err(_) if codec != "none" && body.len() >= limits.max_inflated => {
                set.omitted += 1;
            }
            Err(_) => return Err("corrupt record"),
        }
    }
    Ok(())
}

fn record(r: &mut Reader<'_>, base_offset: i64, base_ts: i64, max: usize) -> Result<Record, WireError> {
    let len = r.varint()?;
    if len < 0 || len as u64 > r.rest().len() as u64 {
        return Err(WireError::BadLength(len));
    }
    let mut r = Reader::new(r.take(len as usize)?, false);
    let _attributes = r.i8()?;
    let ts_delta = r.varint()?;
    let offset_delta = r.varint()?;
    let mut truncated = 0;
    let mut blob = |r: &mut Reader<'_>| -> Result<Option<Vec<u8>>, WireError> {
        let n = r.varint()?;
        if n < 0 {
            return Ok(None);
        }
        let b = r.take(usize::try_from(n).map_err(|_| WireError::BadLength(n))?)?;
        truncated += b.len().saturating_sub(max) as u64;
        Ok(Some(b[..b.len().min(max)].to_vec()))
    };
    let key = blob(&mut r)?;
    let value = blob(&mut r)?;
    let n = r.varint()?;
    if n < 0 || n as u64 > r.rest().len() as u64 {
        return Err(WireError::BadLength(n));
    }
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let k = blob(&mut r)?.unwrap_or_default();
        let v = blob(&mut r)?;
        headers.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    Ok(Record {
        offset: base_offset.wrapping_add(offset_delta),
        timestamp: base_ts.wrapping_add(ts_delta),
        key,
        value,
        truncated,
        headers,
    })
}

/// Decompresses a batch's records, at most `max` bytes (MongoDB's
/// OP_COMPRESSED uses it too, with zlib).
pub(crate) fn inflate(codec: &str, data: &[u8], max: usize) -> Result<Vec<u8>, &'static str> {
    let reader: Box<dyn Read + '_> = match codec {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(data)),
        "zlib" => Box::new(flate2::read::ZlibDecoder::new(data)),
        "snappy" => return snappy(data, max),
        "lz4" => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
        "zstd" => Box::new(ruzstd::StreamingDecoder::new(data).map_err(|_| "bad zstd frame")?),
        _ => return Err("unknown compression codec"),
    };
    let mut out = Vec::new();
    reader.take(max as u64).read_to_end(&mut out).map_err(|_| "corrupt compressed batch")?;
    Ok(out)
}

/// Snappy as Kafka's clients write it: the xerial framing (a magic header,
/// then length-prefixed blocks) or one bare block.
fn snappy(data: &[u8], max: usize) -> Result<Vec<u8>, &'static str> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), &'static str> {
        let n = snap::raw::decompress_len(b).map_err(|_| "corrupt snappy block")?;
        if out.len() + n > max {
            return Err("snappy batch over the bound");
        }
        out.extend(snap::raw::Decoder::new().decompress_vec(b).map_err(|_| "corrupt snappy block")?);
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(XERIAL) {
        block(data, &mut out)?;
        return Ok(out);
    }
    // Magic (8), version (4), compatible version (4), then blocks.
    let mut rest = data.get(16..).ok_or("short snappy header")?;
    while !rest.is_empty() {
        let mut r = Reader::new(rest, false);
        let n = r.i32().map_err(|_| "short snappy block")?;
        let b =
            r.take(usize::try_from(n).map_err(|_| "bad snappy block")?).map_err(|_| "short snappy block")?;
        block(b, &mut out)?;
        rest = r.rest();
    }
    Ok(out)
}

/// Record batches as a client writes them, for tests, benchmarks and fuzzing seeds.
#[doc(hidden)]
pub mod encode {
    /// A record to encode: key, value, headers.
    pub type Rec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [(&'a str, &'a [u8])]);

    /// Zig-zag varint.
    pub fn varint(out: &mut Vec<u8>, v: i64) {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        while u >= 0x80 {
            out.push(u as u8 | 0x80);
            u >>= 7;
        }
        out.push(u as u8);
    }

    /// A v2 batch of `records` (key, value, headers) with codec `codec`
    /// (0 none, 1 gzip), base offset and producer id as given.
    pub fn batch(base_offset: i64, producer_id: i64, codec: i16, records: &[Rec<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (k, v, hs)) in records.iter().enumerate() {
            let mut rec = vec![0u8];
            varint(&mut rec, i as i64); // timestamp delta
            varint(&mut rec, i as i64); // offset delta
            for b in [k, v] {
                match b {
                    None => varint(&mut rec, -1),
                    Some(b) => {
                        varint(&mut rec, b.len() as i64);
                        rec.extend_from_slice(b);
                    }
                }
            }
            varint(&mut rec, hs.len() as i64);
            for (hk, hv) in *hs {
                varint(&mut rec, hk.len() as i64);
                rec.extend_from_slice(hk.as_bytes());
                varint(&mut rec, hv.len() as i64);
                rec.extend_from_slice(hv);
            }
            varint(&mut body, rec.len() as i64);
            body.extend(rec);
        }
        if codec == 1 {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&body).unwrap();
            body = gz.finish().unwrap();
        }
        let mut after_crc = Vec::new();
        after_crc.extend(codec.to_be_bytes());
        after_crc.extend((records.len() as i32 - 1).to_be_bytes());
        after_crc.extend(1_700_000_000_000i64.to_be_bytes());
        after_crc.extend(1_700_000_000_000i64.to_be_bytes());
        after_crc.extend(producer_id.to_be_bytes());
        after_crc.extend(0i16.to_be_bytes());
        after_crc.extend(0i32.to_be_bytes());
        after_crc.extend((records.len() as i32).to_be_bytes());
        after_crc.extend(body);
        let mut b = base_offset.to_be_bytes().to_vec();
        b.extend(((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes());
        b.extend(0i32.to_be_bytes()); // partition leader epoch
        b.push(2);
        b.extend(0u32.to_be_bytes()); // crc (not checked)
        b.extend(after_crc);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SetLimits = SetLimits { max_records: 1000, max_value: 1 << 20, max_inflated: 8 << 20 };

    #[test]
    fn plain_and_gzip_batches_decode() {
        let recs: &[encode::Rec<'_>] = &[
            (Some(b"k1"), Some(b"v1"), &[("h", b"x")]),
            (None, Some(&[0xff, 0]), &[]),
            (Some(b"k3"), None, &[]),
        ];
        for codec in [0, 1] {
            let mut data = encode::batch(40, 7, codec, recs);
            data.extend(encode::batch(43, 7, codec, &recs[..1]));
            let set = decode(&data, LIMITS);
            assert_eq!(set.records.len(), 4, "codec {codec}");
            assert_eq!(set.records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(set.records[0].headers, vec![("h".to_string(), Some(b"x".to_vec()))]);
            assert_eq!(set.records[1].value.as_deref(), Some(&[0xff, 0][..]));
            assert_eq!((set.records[2].value.as_ref(), set.records[2].offset), (None, 42));
            assert_eq!(set.records[3].offset, 43);
            assert_eq!(set.compression, vec![codec_name(codec)]);
            assert_eq!((set.producer_id, set.undecoded), (Some(7), 0));
        }
    }

    #[test]
    fn bounds_cut_and_cut_batches_are_ignored() {
        let data = encode::batch(0, -1, 0, &[(None, Some(b"abcdef"), &[]), (None, Some(b"x"), &[])]);
        let set = decode(&data, SetLimits { max_records: 1, max_value: 4, ..LIMITS });
        assert_eq!((set.records.len(), set.omitted), (1, 1));
        assert_eq!((set.records[0].value.as_deref(), set.records[0].truncated), (Some(&b"abcd"[..]), 2));
        let set = decode(&data[..data.len() - 1], LIMITS);
        assert_eq!((set.records.len(), set.undecoded), (0, 0));
        let mut old = data.clone();
        old[16] = 1;
        assert_eq!(decode(&old, LIMITS).undecoded, 1);
        // A batch length too short to hold the magic byte (found by the fuzzer).
        let short = [&[0u8; 8][..], &4i32.to_be_bytes(), &[0; 5]].concat();
        assert_eq!(
            (decode(&short, LIMITS).undecoded, decode(&short, LIMITS).undecoded_reason),
            (1, Some("short batch"))
        );
    }

    #[test]
    fn snappy_lz4_zstd_inflate() {
        let text = b"kafka kafka kafka kafka".repeat(10);
        let block = snap::raw::Encoder::new().compress_vec(&text).unwrap();
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend((block.len() as i32).to_be_bytes());
        xerial.extend(&block);
        assert_eq!(inflate("snappy", &xerial, 1 << 20).unwrap(), text);
        assert_eq!(inflate("snappy", &block, 1 << 20).unwrap(), text);
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut lz, &text).unwrap();
        assert_eq!(inflate("lz4", &lz.finish().unwrap(), 1 << 20).unwrap(), text);
        // A zstd frame of the text, raw-block form (what `zstd --format=zstd -1` need not be).
        let mut zs = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, text.len() as u8];
        let n = text.len() as u32;
        zs.extend(&[((n << 3) | 1) as u8, (n >> 5) as u8, (n >> 13) as u8]);
        zs.extend(&text);
        assert_eq!(inflate("zstd", &zs, 1 << 20).unwrap(), text);
        assert!(inflate("gzip", b"nope", 100).is_err());
    }
}

//! Compact JSON into a `Vec<u8>`, byte-identical to `serde_json`'s compact
//! output (the property tests below compare the two on random values), but
//! faster where records spend their time: strings are scanned eight bytes
//! at a time for the bytes JSON must escape (bodies are mostly clean text),
//! and output goes to a growing buffer instead of through `io::Write`.
//! Numbers other than integers are formatted by `serde_json` itself.

use serde::ser::{self, Serialize};
use serde_json::Error;

/// Appends `value` as compact JSON to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(&mut Json { out })
}

/// `value` as compact JSON.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(512);
    write(&mut out, value)?;
    Ok(out)
}

/// A byte of `s` that JSON escapes: `"`, `\` or a control character.
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the eight bytes of `w` needs escaping (SWAR: a zero byte
/// in `w ^ '"'`, in `w ^ '\\'`, or a byte below 0x20).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit; bytes
    // with the high bit already set (UTF-8) are masked out by `!w`.
    let below = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))) | below) != 0
}

/// The first 16-byte block from `i` on that holds a byte to escape (or the
/// start of the tail shorter than 16): AVX2 for long clean runs (bodies)
/// where the CPU has it, SSE2 (which every x86_64 has) for the rest.
#[cfg(target_arch = "x86_64")]
fn skip_clean(bytes: &[u8], i: usize) -> usize {
    if bytes.len() - i >= 64 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { skip_clean_avx2(bytes, i) };
    }
    skip_clean_sse2(bytes, i)
}

/// 64 bytes a turn (two 32-byte vectors) while they are clean, then SSE2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn skip_clean_avx2(bytes: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    let quote = _mm256_set1_epi8(b'"' as i8);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    let control_max = _mm256_set1_epi8(0x1f);
    while i + 64 <= bytes.len() {
        // SAFETY: both loads are unaligned and within `bytes`.
        let (a, b) = unsafe {
            let p = bytes.as_ptr().add(i);
            (_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast()))
        };
        // v <= 0x1f unsigned: max(v, 0x1f) == 0x1f; or a quote, or a backslash.
        let flagged = |v: __m256i| {
            let control = _mm256_cmpeq_epi8(_mm256_max_epu8(v, control_max), control_max);
            _mm256_or_si256(
                control,
                _mm256_or_si256(_mm256_cmpeq_epi8(v, quote), _mm256_cmpeq_epi8(v, backslash)),
            )
        };
        if _mm256_movemask_epi8(_mm256_or_si256(flagged(a), flagged(b))) != 0 {
            break;
        }
        i += 64;
    }
    skip_clean_sse2(bytes, i)
}

#[cfg(target_arch = "x86_64")]
fn skip_clean_sse2(bytes: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86_64; loads are unaligned and within `bytes`.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let control_max = _mm_set1_epi8(0x1f);
        // The bytes of `v` to escape, as set lanes.
        let flagged = |v: __m128i| {
            // v <= 0x1f unsigned: max(v, 0x1f) == 0x1f.
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, control_max), control_max);
            let special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
            _mm_or_si128(control, special)
        };
        // 64 bytes a turn while they are clean (bodies), then 16.
        while i + 64 <= bytes.len() {
            let at = |k: usize| _mm_loadu_si128(bytes.as_ptr().add(i + k).cast());
            let any = _mm_or_si128(
                _mm_or_si128(flagged(at(0)), flagged(at(16))),
                _mm_or_si128(flagged(at(32)), flagged(at(48))),
            );
            if _mm_movemask_epi8(any) != 0 {
                break;
            }
            i += 64;
        }
        while i + 16 <= bytes.len() {
            if _mm_movemask_epi8(flagged(_mm_loadu_si128(bytes.as_ptr().add(i).cast()))) != 0 {
                break;
            }
            i += 16;
        }
    }
    i
}

/// Whether a string of at most 16 bytes holds a byte to escape: its bytes
/// gathered into one or two words (overlapping where they do not fill
/// them; a byte tested twice is still tested), without copying the string.
#[inline]
fn short_needs_escape(b: &[u8]) -> bool {
    let n = b.len();
    let w64 = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap());
    let w32 = |s: &[u8]| u64::from(u32::from_le_bytes(s.try_into().unwrap()));
    let word = match n {
        8..=16 => return word_needs_escape(w64(&b[..8])) || word_needs_escape(w64(&b[n - 8..])),
        4..=7 => w32(&b[..4]) | w32(&b[n - 4..]) << 32,
        1..=3 => u64::from_le_bytes([b[0], b[n / 2], b[n - 1], b'a', b'a', b'a', b'a', b'a']),
        _ => return false,
    };
    word_needs_escape(word)
}

/// Elsewhere the eight-byte words below do it all.
#[cfg(not(target_arch = "x86_64"))]
fn skip_clean(_bytes: &[u8], i: usize) -> usize {
    i
}

/// Appends `s` as a JSON string, quotes included, escaped as `serde_json` does.
#[inline]
pub fn escape_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    // Most strings of a record are short and clean (keys, methods, header
    // names and values): written in one step, the bytes moved as words.
    if b.len() <= 16 && !short_needs_escape(b) {
        out.reserve(b.len() + 2);
        out.push(b'"');
        extend_short(out, b);
        out.push(b'"');
        return;
    }
    escape_long(out, b);
}

#[inline(never)]
fn escape_long(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'"');
    escape_contents(out, b);
    out.push(b'"');
}

/// Appends at most 16 bytes as one or two overlapping word moves: a
/// `memcpy` call costs more than the copy at these lengths.
#[inline(always)]
fn extend_short(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    assert!(n <= 16);
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` left room for n bytes after `len`, and each of the
    // n bytes is written (some twice, with the same value) before
    // `set_len`; the reads stay within `b` (each word starts at or after
    // `b[0]` and ends at or before `b[n]`).
    unsafe {
        let (src, dst) = (b.as_ptr(), out.as_mut_ptr().add(len));
        if n >= 8 {
            let (head, tail) =
                (src.cast::<u64>().read_unaligned(), src.add(n - 8).cast::<u64>().read_unaligned());
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) =
                (src.cast::<u32>().read_unaligned(), src.add(n - 4).cast::<u32>().read_unaligned());
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            dst.write(*src);
            dst.add(n / 2).write(*src.add(n / 2));
            dst.add(n - 1).write(*src.add(n - 1));
        }
        out.set_len(len + n);
    }
}

fn escape_contents(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most strings are short and clean (keys, methods, header names and
    // values): a word or two read in place says so.
    if bytes.len() <= 16 && !short_needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        i = skip_clean(bytes, i);
        // A clean tail (after the last flagged block) is read as two words.
        if bytes.len() - i <= 16 && !short_needs_escape(&bytes[i..]) {
            break;
        }
        // Whole clean words are skipped; a flagged word (the test is exact:
        // it flags a word only when one of its bytes needs escaping) or the
        // tail is searched byte by byte.
        while i + 8 <= bytes.len()
            && !word_needs_escape(u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap()))
        {
            i += 8;
        }
        let end = (i + 8).min(bytes.len());
        let Some(at) = bytes[i..end].iter().position(|&b| needs_escape(b)).map(|p| i + p) else {
            i = end;
            continue;
        };
        out.extend_from_slice(&bytes[start..at]);
        let b = bytes[at];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
        }
        i = at + 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `v` in decimal.
pub(crate) fn write_uint(out: &mut Vec<u8>, v: u64) {
    Json { out }.int(v);
}

/// The serializer: compact JSON into `out`.
struct Json<'a> {
    out: &'a mut Vec<u8>,
}

impl Json<'_> {
    fn int(&mut self, v: impl itoa::Integer) {
        let mut buf = itoa::Buffer::new();
        let text = buf.format(v).as_bytes();
        if text.len() <= 16 {
            extend_short(self.out, text);
        } else {
            self.out.extend_from_slice(text);
        }
    }

    /// A float exactly as `serde_json` writes it (`null` when not finite).
    fn float<F: Serialize>(&mut self, v: F) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.out, &v)
    }
}

/// A sequence or map being written: whether a comma is due.
pub struct Compound<'a, 'b> {
    ser: &'b mut Json<'a>,
    first: bool,
    /// Closing bytes (`]`, `}`, or `]}`/`}}` for enum variants).
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.ser.out.push(b',');
        }
    }
}

impl<'a, 'b> ser::Serializer for &'b mut Json<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = Compound<'a, 'b>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        escape_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        escape_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.out.push(b'{');
        escape_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'b>, Error> {
        self.out.push(b'[');
        Ok(Compound { ser: self, first: true, close: b"]" })
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'b>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, 'b>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, Error> {
        self.out.push(b'{');
        escape_str(self.out, variant);
        self.out.extend_from_slice(b":[");
        Ok(Compound { ser: self, first: true, close: b"]}" })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'b>, Error> {
        self.out.push(b'{');
        Ok(Compound { ser: self, first: true, close: b"}" })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, 'b>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, Error> {
        self.out.push(b'{');
        escape_str(self.out, variant);
        self.out.extend_from_slice(b":{");
        Ok(Compound { ser: self, first: true, close: b"}}" })
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        // Formatted straight into the output, escaped piece by piece.
        struct Escaping<'v>(&'v mut Vec<u8>);
        impl std::fmt::Write for Escaping<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                escape_contents(self.0, s.as_bytes());
                Ok(())
            }
        }
        self.out.push(b'"');
        std::fmt::write(&mut Escaping(self.out), format_args!("{value}")).map_err(ser::Error::custom)?;
        self.out.push(b'"');
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma();
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), Error> {
        // One or two bytes: pushed, not copied by a memcpy call.
        for &b in self.close {
            self.ser.out.push(b);
        }
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma();
        key.serialize(MapKey { out: self.ser.out })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.ser.out.push(b':');
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        ser::SerializeMap::serialize_entry(self, key, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        ser::SerializeMap::serialize_entry(self, key, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

/// A map key: strings as they are, integers, booleans and chars quoted,
/// anything else is an error; what `serde_json` writes, through it.
struct MapKey<'v> {
    out: &'v mut Vec<u8>,
}

impl MapKey<'_> {
    /// Anything but a string: `serde_json` decides (quoting or refusing).
    fn by_serde_json<T: Serialize>(self, key: T) -> Result<(), Error> {
        /// A map of one entry, `{KEY:null}`, whose key is cut out.
        struct One<T>(T);
        impl<T: Serialize> Serialize for One<T> {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(&self.0, &())?;
                m.end()
            }
        }
        let text = serde_json::to_vec(&One(key))?;
        self.out.extend_from_slice(&text[1..text.len() - ":null}".len()]);
        Ok(())
    }
}

fn key_must_be_a_string() -> Error {
    ser::Error::custom("key must be a string")
}

macro_rules! keys_through_serde_json {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<(), Error> {
            self.by_serde_json(v)
        }
    )*};
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        escape_str(self.out, v);
        Ok(())
    }
    keys_through_serde_json!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_u128: u128, serialize_f32: f32, serialize_f64: f64, serialize_char: char
    );
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_a_string())
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.serialize_str(&value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A small deterministic generator (xorshift), so failures repeat.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Text weighted towards what JSON escapes and what UTF-8 spans.
        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "Z",
                "0",
                " ",
                "\"",
                "\\",
                "\n",
                "\r",
                "\t",
                "\u{8}",
                "\u{c}",
                "\u{0}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "€",
                "😀",
                "\u{2028}",
                "/",
                "hello world, ",
                "abcdefgh",
                "{}[]:,",
            ];
            let n = self.below(40);
            (0..n).map(|_| PIECES[self.below(PIECES.len() as u64) as usize]).collect()
        }
        fn value(&mut self, depth: u32) -> Value {
            match self.below(if depth > 3 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 1),
                2 => json!(self.next() as i64),
                3 => json!(self.next()),
                4 => json!(f64::from_bits(self.next() >> 2) * if self.below(2) == 1 { -1.0 } else { 1.0 }),
                5 => Value::String(self.string()),
                6 => Value::Array((0..self.below(5)).map(|_| self.value(depth + 1)).collect()),
                _ => Value::Object(
                    (0..self.below(5)).map(|_| (self.string(), self.value(depth + 1))).collect(),
                ),
            }
        }
    }

    fn ours<T: Serialize + ?Sized>(v: &T) -> String {
        let mut out = Vec::new();
        write(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn random_values_are_written_byte_for_byte_as_serde_json_writes_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let v = rng.value(0);
            assert_eq!(ours(&v), serde_json::to_string(&v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn strings_of_every_length_and_escape_position_match() {
        // Every position of an escape within and across the eight-byte words
        // and the 16- and 64-byte blocks.
        for len in 0..150 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '\u{80}'] {
                    let mut s: String = "x".repeat(len);
                    s.replace_range(at..at + 1, &special.to_string());
                    assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
        // Every byte value below 0x80 alone and among clean text.
        for b in 0u8..0x80 {
            let s = format!("abcdefgh{}ijklmnop", b as char);
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{b:#x}");
        }
    }

    /// The AVX2 scan (where the CPU has it) stops where SSE2 alone stops.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_block_scans_stop_at_the_same_block() {
        for len in 0..300 {
            for at in (0..len).step_by(7).chain([len]) {
                let mut b = vec![b'x'; len];
                if at < len {
                    b[at] = b'"';
                }
                for from in [0, 1, 17] {
                    let from = from.min(len);
                    assert_eq!(
                        skip_clean(&b, from),
                        skip_clean_sse2(&b, from),
                        "len {len}, escape at {at}, from {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn serde_shapes_match() {
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, &'static str),
            Struct { a: Option<u8>, b: () },
        }
        #[derive(serde::Serialize)]
        struct S<'a> {
            e: Vec<E>,
            bytes: &'a [u8],
            c: char,
            f: (f32, f64, f64),
            m: std::collections::BTreeMap<u32, bool>,
            b: std::collections::BTreeMap<bool, i8>,
        }
        let v = S {
            e: vec![E::Unit, E::New(1), E::Tuple(2, "t\""), E::Struct { a: None, b: () }],
            bytes: &[0, 255],
            c: '\n',
            f: (1.5, f64::NAN, -0.0),
            m: [(7, true), (u32::MAX, false)].into(),
            b: [(true, -1)].into(),
        };
        assert_eq!(ours(&v), serde_json::to_string(&v).unwrap());
        let display = format_args!("a\"b{}", 1);
        let mut out = Vec::new();
        ser::Serializer::collect_str(&mut Json { out: &mut out }, &display).unwrap();
        assert_eq!(out, serde_json::to_vec(&display.to_string()).unwrap());
    }
}

//! Kafka's primitive types off a byte slice: big-endian integers, zig-zag
//! varints, legacy (int16-length) and compact (uvarint length + 1) strings
//! and bytes, arrays of both kinds, UUIDs and tagged fields.

/// Why a message body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ended inside a field.
    #[error("Kafka message ends inside a field")]
    Short,
    /// A length or count that cannot be (negative where not nullable, or
    /// beyond the bytes left).
    #[error("bad Kafka length or count {0}")]
    BadLength(i64),
}

/// A cursor over one message body. `flexible` selects the compact forms of
/// strings, bytes and arrays and the tagged-field sections of flexible
/// versions.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    /// Compact encodings and tagged fields (a flexible version).
    pub flexible: bool,
    len0: usize,
    /// Ranges of the body that were never captured (zeros stand in).
    holes: &'a [std::ops::Range<usize>],
    /// Bytes of those ranges that fell inside fields said not captured.
    pub accounted: u64,
}

type R<T> = Result<T, WireError>;

impl<'a> Reader<'a> {
    /// Reads `buf`, flexible or not.
    pub fn new(buf: &'a [u8], flexible: bool) -> Self {
        Self { buf, flexible, len0: buf.len(), holes: &[], accounted: 0 }
    }

    /// Reads `buf`, whose `holes` were never captured.
    pub fn with_holes(buf: &'a [u8], holes: &'a [std::ops::Range<usize>]) -> Self {
        Self { holes, ..Self::new(buf, false) }
    }

    /// Offset of the next byte in the body.
    pub fn pos(&self) -> usize {
        self.len0 - self.buf.len()
    }

    /// Whether any of `range` (body offsets) was never captured; what was
    /// is counted in `accounted`.
    pub fn uncaptured(&mut self, range: std::ops::Range<usize>) -> bool {
        let overlap: usize =
            self.holes.iter().map(|h| h.end.min(range.end).saturating_sub(h.start.max(range.start))).sum();
        self.accounted += overlap as u64;
        overlap > 0
    }

    /// Whether every byte that never came fell in a field said not captured.
    pub fn holes_accounted(&self) -> bool {
        self.accounted >= self.holes.iter().map(|h| h.len() as u64).sum::<u64>()
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.buf.len() {
            return Err(WireError::Short);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// int8.
    pub fn i8(&mut self) -> R<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    /// int16.
    pub fn i16(&mut self) -> R<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// int32.
    pub fn i32(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// int64.
    pub fn i64(&mut self) -> R<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// uuid (16 bytes).
    pub fn uuid(&mut self) -> R<[u8; 16]> {
        self.array()
    }

    /// unsigned varint (LEB128, at most 10 bytes).
    pub fn uvarint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.first().ok_or(WireError::Short)?;
            self.buf = &self.buf[1..];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::BadLength(-1))
    }

    /// signed (zig-zag) varint or varlong.
    pub fn varint(&mut self) -> R<i64> {
        let v = self.uvarint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A compact length or count: uvarint N+1, 0 for null (-1); one beyond
    /// i64 (garbage) is refused rather than wrapped.
    fn compact_length(&mut self) -> R<i64> {
        match self.uvarint()? {
            0 => Ok(-1),
            v => i64::try_from(v - 1).map_err(|_| WireError::BadLength(i64::MAX)),
        }
    }

    /// A length that may be null (`None`): int16 or int32 in legacy form,
    /// uvarint N+1 in compact form.
    fn length(&mut self, wide: bool) -> R<Option<usize>> {
        let n: i64 = if self.flexible {
            self.compact_length()?
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 || n as u64 > self.buf.len() as u64 => Err(WireError::BadLength(n)),
            n => Ok(Some(n as usize)),
        }
    }

    /// A nullable string (invalid UTF-8 replaced).
    pub fn nullable_string(&mut self) -> R<Option<String>> {
        match self.length(false)? {
            None => Ok(None),
            Some(n) => Ok(Some(String::from_utf8_lossy(self.take(n)?).into_owned())),
        }
    }

    /// A string (null read as empty).
    pub fn string(&mut self) -> R<String> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }

    /// Nullable bytes (int32 length in legacy form).
    pub fn nullable_bytes(&mut self) -> R<Option<&'a [u8]>> {
        match self.length(true)? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    /// An array's element count (null read as 0); each element needs at
    /// least one byte, so a count beyond the bytes left is refused.
    pub fn count(&mut self) -> R<usize> {
        let n: i64 = if self.flexible { self.compact_length()? } else { i64::from(self.i32()?) };
        match n {
            -1 => Ok(0),
            n if n < 0 || n as u64 > self.buf.len() as u64 => Err(WireError::BadLength(n)),
            n => Ok(n as usize),
        }
    }

    /// Skips a tagged-field section (flexible versions only).
    pub fn tags(&mut self) -> R<()> {
        if !self.flexible {
            return Ok(());
        }
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let len = self.uvarint()?;
            if len > self.buf.len() as u64 {
                return Err(WireError::BadLength(len as i64));
            }
            self.take(len as usize)?;
        }
        Ok(())
    }

    /// An array of `elem`, each followed by its tagged fields.
    pub fn vec<T>(&mut self, mut elem: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let n = self.count()?;
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let item = elem(self)?;
            self.tags()?;
            v.push(item);
        }
        Ok(v)
    }

    /// An array of int32 (no tagged fields per element).
    pub fn i32s(&mut self) -> R<Vec<i32>> {
        let n = self.count()?;
        (0..n).map(|_| self.i32()).collect()
    }
}

/// A topic id as Kafka prints it (URL-safe base64, no padding).
pub fn uuid_text(id: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_strings() {
        // zig-zag: 1 → -1, 2 → 1, 300 (0xac 0x02) → 150.
        let mut r = Reader::new(&[0x01, 0x02, 0xac, 0x02], false);
        assert_eq!((r.varint(), r.varint(), r.varint()), (Ok(-1), Ok(1), Ok(150)));
        let mut r = Reader::new(b"\x00\x02hi\xff\xff", false);
        assert_eq!((r.string(), r.nullable_string()), (Ok("hi".into()), Ok(None)));
        let mut r = Reader::new(b"\x03hi\x00\x01", true);
        assert_eq!((r.string(), r.nullable_string(), r.count()), (Ok("hi".into()), Ok(None), Ok(0)));
        assert_eq!(Reader::new(b"\x00\x05hi", false).string(), Err(WireError::BadLength(5)));
        assert_eq!(
            Reader::new(b"\x7f\xff\xff\xff", false).count(),
            Err(WireError::BadLength(i32::MAX as i64))
        );
        assert_eq!(Reader::new(&[0x80; 11], false).uvarint(), Err(WireError::BadLength(-1)));
        // A compact length or count past i64 (a fuzzer's input) is refused, not wrapped.
        let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert_eq!(Reader::new(&huge, true).count(), Err(WireError::BadLength(i64::MAX)));
        assert_eq!(Reader::new(&huge, true).string(), Err(WireError::BadLength(i64::MAX)));
        // Two tagged fields skipped, then a byte.
        let mut r = Reader::new(&[2, 0, 1, 9, 5, 2, 7, 7, 42], true);
        assert_eq!((r.tags(), r.i8()), (Ok(()), Ok(42)));
    }
}

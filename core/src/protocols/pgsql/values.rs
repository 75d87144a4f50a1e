//! Reading PostgreSQL message bodies: C strings, big-endian integers,
//! parameter and cell values by format and type, error fields.

pub use crate::protocols::db::Cell;

/// A cursor over a message body.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// A NUL-terminated string.
    pub fn cstr(&mut self) -> Option<String> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Some(s)
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.bytes(2)?.try_into().ok()?))
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }

    /// A value prefixed by its i32 length (-1: NULL), decoded by `format`
    /// (0 text, 1 binary) and type `oid`; `None` when the body ends early.
    pub fn value(&mut self, format: i16, oid: u32) -> Option<Cell> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Cell::Null);
        }
        Some(decode(self.bytes(len as usize)?, format, oid))
    }
}

/// Type OIDs (pg_type.dat) decoded from the binary format.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const NAME: u32 = 19;
}

/// One value's bytes as a cell.
pub fn decode(b: &[u8], format: i16, oid: u32) -> Cell {
    let text = || match std::str::from_utf8(b) {
        Ok(t) => Cell::Text(t.to_string()),
        Err(_) => Cell::Bytes(b.to_vec()),
    };
    if format == 0 {
        return text();
    }
    let int = |n: usize| -> Option<i64> {
        Some(match n {
            2 => i64::from(i16::from_be_bytes(b.try_into().ok()?)),
            4 => i64::from(i32::from_be_bytes(b.try_into().ok()?)),
            _ => i64::from_be_bytes(b.try_into().ok()?),
        })
    };
    let cell = match oid {
        oid::BOOL if b.len() == 1 => Some(Cell::Bool(b[0] != 0)),
        oid::INT2 if b.len() == 2 => int(2).map(Cell::Int),
        oid::INT4 | oid::OID if b.len() == 4 => int(4).map(Cell::Int),
        oid::INT8 if b.len() == 8 => int(8).map(Cell::Int),
        oid::FLOAT4 => b.try_into().ok().map(|a| Cell::Float(f64::from(f32::from_be_bytes(a)))),
        oid::FLOAT8 => b.try_into().ok().map(|a| Cell::Float(f64::from_be_bytes(a))),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON => Some(text()),
        // bytea and every type not decoded: the bytes as sent.
        _ => None,
    };
    cell.unwrap_or_else(|| Cell::Bytes(b.to_vec()))
}

/// An ErrorResponse's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgError {
    /// `S`: ERROR, FATAL, …
    pub severity: String,
    /// `C`: the SQLSTATE code.
    pub code: String,
    /// `M`: the message.
    pub message: String,
    /// `D`: detail, when sent.
    pub detail: Option<String>,
}

/// Reads an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> PgError {
    let mut r = Reader(body);
    let mut e = PgError::default();
    while let Some((&field, rest)) = r.0.split_first() {
        if field == 0 {
            break;
        }
        r.0 = rest;
        let Some(value) = r.cstr() else { break };
        match field {
            b'S' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            _ => {}
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_format_and_type() {
        assert_eq!(decode(b"42", 0, oid::INT4), Cell::Text("42".into()));
        assert_eq!(decode(&[0, 0, 0, 42], 1, oid::INT4), Cell::Int(42));
        assert_eq!(decode(&[0xff, 0xfe], 1, oid::INT2), Cell::Int(-2));
        assert_eq!(decode(&1.5f64.to_be_bytes(), 1, oid::FLOAT8), Cell::Float(1.5));
        assert_eq!(decode(&[1], 1, oid::BOOL), Cell::Bool(true));
        assert_eq!(decode(&[0, 1, 0xff], 1, 17), Cell::Bytes(vec![0, 1, 0xff]));
        assert_eq!(decode(b"hi", 1, oid::VARCHAR), Cell::Text("hi".into()));
        assert_eq!(decode(&[0, 0], 1, oid::INT4), Cell::Bytes(vec![0, 0]), "wrong size: as sent");
        let mut r = Reader(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, b'x']);
        assert_eq!(
            (r.value(0, 0), r.value(0, 0), r.value(0, 0)),
            (Some(Cell::Null), Some(Cell::Text("x".into())), None)
        );
    }

    #[test]
    fn error_response_fields() {
        let e = error_fields(b"SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0\0");
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("ERROR", "42P01"));
        assert_eq!(e.message, "relation \"nope\" does not exist");
    }
}

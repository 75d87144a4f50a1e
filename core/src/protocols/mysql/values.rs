//! MySQL binary-protocol values (COM_STMT_EXECUTE parameters and binary
//! result rows) by column type, and ERR packets.

use super::packet::Reader;
use crate::protocols::db::Cell;

/// `MYSQL_TYPE_*` codes decoded here.
mod ty {
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
}

/// One binary value of type `t` (`unsigned` from the column or parameter
/// flags); `None` when the payload ends early or the type is unknown.
pub fn binary(r: &mut Reader<'_>, t: u8, unsigned: bool) -> Option<Cell> {
    let int = |v: u64, bytes: u32| {
        if unsigned {
            Cell::Int(v as i64)
        } else {
            let shift = 64 - 8 * bytes;
            Cell::Int(((v << shift) as i64) >> shift)
        }
    };
    Some(match t {
        ty::TINY => int(r.uint(1)?, 1),
        ty::SHORT | ty::YEAR => int(r.uint(2)?, 2),
        ty::LONG | ty::INT24 => int(r.uint(4)?, 4),
        ty::LONGLONG => int(r.uint(8)?, 8),
        ty::FLOAT => Cell::Float(f64::from(f32::from_le_bytes(r.bytes(4)?.try_into().ok()?))),
        ty::DOUBLE => Cell::Float(f64::from_le_bytes(r.bytes(8)?.try_into().ok()?)),
        ty::NULL => Cell::Null,
        ty::DATE | ty::DATETIME | ty::TIMESTAMP => {
            let n = usize::from(r.u8()?);
            let b = r.bytes(n)?;
            let mut r = Reader(b);
            let (y, mo, d) = (r.uint(2).unwrap_or(0), r.uint(1).unwrap_or(0), r.uint(1).unwrap_or(0));
            let date = format!("{y:04}-{mo:02}-{d:02}");
            if t == ty::DATE || n == 4 || n == 0 {
                Cell::Text(if t == ty::DATE { date } else { format!("{date} 00:00:00") })
            } else {
                let (h, mi, s) = (r.uint(1).unwrap_or(0), r.uint(1).unwrap_or(0), r.uint(1).unwrap_or(0));
                let us = r.uint(4).map(|u| format!(".{u:06}")).unwrap_or_default();
                Cell::Text(format!("{date} {h:02}:{mi:02}:{s:02}{us}"))
            }
        }
        ty::TIME => {
            let n = usize::from(r.u8()?);
            let b = r.bytes(n)?;
            let mut r = Reader(b);
            let neg = r.u8().unwrap_or(0) == 1;
            let days = r.uint(4).unwrap_or(0);
            let (h, mi, s) = (r.uint(1).unwrap_or(0), r.uint(1).unwrap_or(0), r.uint(1).unwrap_or(0));
            let us = r.uint(4).map(|u| format!(".{u:06}")).unwrap_or_default();
            Cell::Text(format!("{}{:02}:{mi:02}:{s:02}{us}", if neg { "-" } else { "" }, days * 24 + h))
        }
        // Strings, decimals, blobs, JSON, enums, sets, bits, geometry: length-encoded bytes.
        0 | 15 | 16 | 245..=255 => text(r.lenenc_bytes()?),
        _ => return None,
    })
}

/// Text (or bytes that are not UTF-8).
pub fn text(b: &[u8]) -> Cell {
    match std::str::from_utf8(b) {
        Ok(t) => Cell::Text(t.to_string()),
        Err(_) => Cell::Bytes(b.to_vec()),
    }
}

/// An ERR packet's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MyError {
    /// The error number (1146: table does not exist, …).
    pub code: u16,
    /// The SQLSTATE, when sent.
    pub sqlstate: String,
    /// The message.
    pub message: String,
}

/// Reads an ERR packet (after its 0xff).
pub fn error(body: &[u8]) -> MyError {
    let mut r = Reader(body);
    let code = r.uint(2).unwrap_or(0) as u16;
    let mut sqlstate = String::new();
    if r.0.first() == Some(&b'#') {
        r.u8();
        sqlstate = String::from_utf8_lossy(r.bytes(5).unwrap_or_default()).into_owned();
    }
    MyError { code, sqlstate, message: String::from_utf8_lossy(r.rest()).into_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_by_type() {
        let b = [0xff, 0xfe, 0xff, 0xff, 0xff, 3, b'a', b'b', b'c', 7, 0xe8, 0x07, 12, 5, 10, 30, 0];
        let mut r = Reader(&b);
        assert_eq!(binary(&mut r, ty::TINY, false), Some(Cell::Int(-1)));
        assert_eq!(binary(&mut r, ty::LONG, false), Some(Cell::Int(-2)));
        assert_eq!(binary(&mut r, 253, false), Some(Cell::Text("abc".into())));
        assert_eq!(binary(&mut r, ty::DATETIME, false), Some(Cell::Text("2024-12-05 10:30:00".into())));
        let mut r = Reader(&[0xff]);
        assert_eq!(binary(&mut r, ty::TINY, true), Some(Cell::Int(255)));
        let e = error(b"\x7a\x04#42S02Table 'shop.nope' doesn't exist");
        assert_eq!(
            (e.code, e.sqlstate.as_str(), e.message.as_str()),
            (1146, "42S02", "Table 'shop.nope' doesn't exist")
        );
    }
}

//! BSON documents decoded into a tree that keeps field order, written as
//! relaxed Extended JSON (the MongoDB Extended JSON v2 spec). Hand-written
//! rather than the `bson` crate: only decoding is needed, it must stop at
//! a depth and a byte bound and keep what came before a cut (a frame's head
//! when the frame was over the bound), and the crate would bring chrono,
//! indexmap, rand, serde_with and uuid for none of that.

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// Deepest nesting decoded; deeper documents become [`Bson::Cut`] (the
/// server's own limit is 100, this one keeps the recursion short).
pub const MAX_DEPTH: usize = 64;

/// A BSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bson {
    /// 0x01, kept as its bits (so the tree can be `Eq`).
    Double(u64),
    /// 0x02.
    String(String),
    /// 0x03, fields in wire order.
    Document(Doc),
    /// 0x04.
    Array(Vec<Bson>),
    /// 0x05.
    Binary {
        /// Binary subtype.
        subtype: u8,
        /// The bytes.
        data: Vec<u8>,
    },
    /// 0x06 (deprecated).
    Undefined,
    /// 0x07.
    ObjectId([u8; 12]),
    /// 0x08.
    Bool(bool),
    /// 0x09, ms since the epoch.
    DateTime(i64),
    /// 0x0A.
    Null,
    /// 0x0B.
    Regex {
        /// The pattern.
        pattern: String,
        /// Its options.
        options: String,
    },
    /// 0x0C (deprecated).
    DbPointer {
        /// Namespace.
        ns: String,
        /// The id.
        id: [u8; 12],
    },
    /// 0x0D.
    Code(String),
    /// 0x0E (deprecated).
    Symbol(String),
    /// 0x0F.
    CodeWithScope {
        /// The code.
        code: String,
        /// Its scope.
        scope: Doc,
    },
    /// 0x10.
    Int32(i32),
    /// 0x11.
    Timestamp {
        /// Seconds.
        t: u32,
        /// Increment.
        i: u32,
    },
    /// 0x12.
    Int64(i64),
    /// 0x13, little-endian IEEE 754-2008 decimal128.
    Decimal128([u8; 16]),
    /// 0xFF.
    MinKey,
    /// 0x7F.
    MaxKey,
    /// What was not kept: auth payloads (`"auth"`), a value past a bound
    /// or cut short (`"truncated"`).
    Omitted(&'static str),
}

/// A document: fields in the order they came, and whether it was cut.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Doc {
    /// Name and value of each field decoded.
    pub fields: Vec<(String, Bson)>,
    /// The bytes ended (or a bound was reached) before the document did.
    pub truncated: bool,
}

impl Doc {
    /// The first field's name (a command's name).
    pub fn first_key(&self) -> Option<&str> {
        self.fields.first().map(|(k, _)| k.as_str())
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&Bson> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The string value of field `name`.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Bson::String(s) => Some(s),
            _ => None,
        }
    }

    /// Field `name` as a number, if it is one.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }

    /// Replaces the values of the fields named in `names`, at any depth,
    /// with [`Bson::Omitted`]`(why)`.
    pub fn omit(&mut self, names: &[&str], why: &'static str) {
        self.replace_named(&|k| names.contains(&k), &|_| Bson::Omitted(why));
    }

    /// Replaces the value of every field whose name `wanted` accepts, at
    /// any depth, with what `replace` makes of it (redaction by name).
    pub fn replace_named(&mut self, wanted: &impl Fn(&str) -> bool, replace: &impl Fn(&Bson) -> Bson) {
        for (k, v) in &mut self.fields {
            if wanted(k) {
                *v = replace(v);
            } else {
                v.replace_named(wanted, replace);
            }
        }
    }
}

impl Bson {
    /// The value as a number, for the numeric types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Bson::Double(b) => Some(f64::from_bits(b)),
            Bson::Int32(n) => Some(f64::from(n)),
            Bson::Int64(n) => Some(n as f64),
            _ => None,
        }
    }

    fn replace_named(&mut self, wanted: &impl Fn(&str) -> bool, replace: &impl Fn(&Bson) -> Bson) {
        match self {
            Bson::Document(d) | Bson::CodeWithScope { scope: d, .. } => d.replace_named(wanted, replace),
            Bson::Array(a) => a.iter_mut().for_each(|v| v.replace_named(wanted, replace)),
            _ => {}
        }
    }
}

/// Bytes read from a document, stopping at its end or where a bound said.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

/// The bytes ended first.
struct Short;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let b = self.data.get(self.at..self.at.checked_add(n).ok_or(Short)?).ok_or(Short)?;
        self.at += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn i32(&mut self) -> Result<i32, Short> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn cstring(&mut self) -> Result<String, Short> {
        let rest = &self.data[self.at.min(self.data.len())..];
        let end = rest.iter().position(|&b| b == 0).ok_or(Short)?;
        self.at += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// An int32 length (with the terminating NUL) and the string.
    fn string(&mut self) -> Result<String, Short> {
        let n = usize::try_from(self.i32()?).map_err(|_| Short)?;
        let b = self.take(n)?;
        let text = b.strip_suffix(&[0]).unwrap_or(b);
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}

/// Decodes the document at the start of `data`. Returns it and the bytes
/// its length field says it takes (which may exceed `data` when cut): a
/// document cut short, or one with a bad element, keeps the fields before
/// the cut and is marked truncated. `None` when not even the length is there.
pub fn document(data: &[u8]) -> Option<(Doc, usize)> {
    let len = i32::from_le_bytes(data.get(..4)?.try_into().ok()?);
    let len = usize::try_from(len).ok().filter(|&n| n >= 5)?;
    let body = &data[..len.min(data.len())];
    Some((fields(body, 0), len))
}

/// The fields of the document `body` (its length prefix included).
fn fields(body: &[u8], depth: usize) -> Doc {
    let mut doc = Doc::default();
    if depth >= MAX_DEPTH {
        doc.truncated = true;
        return doc;
    }
    let mut r = Reader { data: body, at: 4 };
    loop {
        let Ok([kind]) = r.array::<1>() else {
            doc.truncated = true;
            return doc;
        };
        if kind == 0 {
            return doc;
        }
        let name = r.cstring();
        let value = name.as_ref().ok().map(|_| element(kind, &mut r, depth));
        match (name, value) {
            (Ok(name), Some(Ok(v))) => doc.fields.push((name, v)),
            (Ok(name), _) => {
                doc.fields.push((name, Bson::Omitted("truncated")));
                doc.truncated = true;
                return doc;
            }
            (Err(_), _) => {
                doc.truncated = true;
                return doc;
            }
        }
    }
}

/// A nested document's bytes: its length's worth, or what there is.
fn nested<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], Short> {
    let start = r.at;
    let len = usize::try_from(r.i32()?).map_err(|_| Short)?;
    r.at = start;
    match r.take(len) {
        Ok(b) if len >= 5 => Ok(b),
        Ok(_) => Err(Short),
        // Cut: what there is, decoded as far as it goes.
        Err(Short) => {
            let b = &r.data[start..];
            r.at = r.data.len();
            Ok(b)
        }
    }
}

fn element(kind: u8, r: &mut Reader<'_>, depth: usize) -> Result<Bson, Short> {
    Ok(match kind {
        0x01 => Bson::Double(u64::from_le_bytes(r.array()?)),
        0x02 => Bson::String(r.string()?),
        0x03 => Bson::Document(fields(nested(r)?, depth + 1)),
        0x04 => {
            let d = fields(nested(r)?, depth + 1);
            // Keys are "0", "1", …: the values are the array.
            Bson::Array(d.fields.into_iter().map(|(_, v)| v).collect())
        }
        0x05 => {
            let n = usize::try_from(r.i32()?).map_err(|_| Short)?;
            let [subtype] = r.array()?;
            let mut data = r.take(n)?;
            // The old binary subtype repeats the length inside.
            if subtype == 2 && data.len() >= 4 {
                data = &data[4..];
            }
            Bson::Binary { subtype, data: data.to_vec() }
        }
        0x06 => Bson::Undefined,
        0x07 => Bson::ObjectId(r.array()?),
        0x08 => Bson::Bool(r.array::<1>()?[0] != 0),
        0x09 => Bson::DateTime(i64::from_le_bytes(r.array()?)),
        0x0A => Bson::Null,
        0x0B => Bson::Regex { pattern: r.cstring()?, options: r.cstring()? },
        0x0C => Bson::DbPointer { ns: r.string()?, id: r.array()? },
        0x0D => Bson::Code(r.string()?),
        0x0E => Bson::Symbol(r.string()?),
        0x0F => {
            r.i32()?; // total length
            let code = r.string()?;
            Bson::CodeWithScope { code, scope: fields(nested(r)?, depth + 1) }
        }
        0x10 => Bson::Int32(r.i32()?),
        0x11 => {
            let i = u32::from_le_bytes(r.array()?);
            Bson::Timestamp { t: u32::from_le_bytes(r.array()?), i }
        }
        0x12 => Bson::Int64(i64::from_le_bytes(r.array()?)),
        0x13 => Bson::Decimal128(r.array()?),
        0xFF => Bson::MinKey,
        0x7F => Bson::MaxKey,
        // An unknown type: its size is unknown, nothing after it can be read.
        _ => return Err(Short),
    })
}

/// `{"$numberLong": "…"}` and friends: one key, a string value.
fn wrapped<S: Serializer, T: Serialize + ?Sized>(s: S, key: &str, value: &T) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, value)?;
    m.end()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Relaxed Extended JSON: numbers as JSON numbers where JSON can hold them,
/// dates between 1970 and 9999 as ISO-8601, the rest in `$`-wrappers.
impl Serialize for Bson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bson::Double(bits) => {
                let f = f64::from_bits(*bits);
                if f.is_finite() {
                    s.serialize_f64(f)
                } else {
                    let text = if f.is_nan() {
                        "NaN"
                    } else if f > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    };
                    wrapped(s, "$numberDouble", &text)
                }
            }
            Bson::String(t) => s.serialize_str(t),
            Bson::Symbol(t) => wrapped(s, "$symbol", t),
            Bson::Document(d) => d.serialize(s),
            Bson::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Bson::Binary { subtype, data } => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                wrapped(
                    s,
                    "$binary",
                    &serde_json::json!({"base64": b64, "subType": format!("{subtype:02x}")}),
                )
            }
            Bson::Undefined => wrapped(s, "$undefined", &true),
            Bson::ObjectId(id) => wrapped(s, "$oid", &hex(id)),
            Bson::Bool(b) => s.serialize_bool(*b),
            Bson::DateTime(ms) => match iso_date(*ms) {
                Some(text) => wrapped(s, "$date", &text),
                None => wrapped(s, "$date", &serde_json::json!({"$numberLong": ms.to_string()})),
            },
            Bson::Null => s.serialize_none(),
            Bson::Regex { pattern, options } => {
                wrapped(s, "$regularExpression", &serde_json::json!({"pattern": pattern, "options": options}))
            }
            Bson::DbPointer { ns, id } => {
                wrapped(s, "$dbPointer", &serde_json::json!({"$ref": ns, "$id": {"$oid": hex(id)}}))
            }
            Bson::Code(c) => wrapped(s, "$code", c),
            Bson::CodeWithScope { code, scope } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("$code", code)?;
                m.serialize_entry("$scope", scope)?;
                m.end()
            }
            Bson::Int32(n) => s.serialize_i32(*n),
            Bson::Timestamp { t, i } => wrapped(s, "$timestamp", &serde_json::json!({"t": t, "i": i})),
            Bson::Int64(n) => s.serialize_i64(*n),
            Bson::Decimal128(b) => wrapped(s, "$numberDecimal", &decimal128(b)),
            Bson::MinKey => wrapped(s, "$minKey", &1),
            Bson::MaxKey => wrapped(s, "$maxKey", &1),
            Bson::Omitted(why) => wrapped(s, "$omitted", why),
        }
    }
}

/// `1970-01-01T00:00:00Z` (with `.mmm` when there are milliseconds) for
/// years 1970 to 9999, as relaxed Extended JSON writes dates.
fn iso_date(ms: i64) -> Option<String> {
    const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    if !(0..=MAX).contains(&ms) {
        return None;
    }
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, sec, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    let frac = if milli > 0 { format!(".{milli:03}") } else { String::new() };
    Some(format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}{frac}Z"))
}

/// A decimal128 as the spec's to-string algorithm writes it.
fn decimal128(b: &[u8; 16]) -> String {
    let bits = u128::from_le_bytes(*b);
    let negative = bits >> 127 == 1;
    let sign = if negative { "-" } else { "" };
    let combination = (bits >> 122) & 0x1f;
    if combination == 0x1f {
        return if (bits >> 121) & 1 == 1 { "NaN".into() } else { format!("{sign}Infinity") };
    }
    let (exponent, coefficient) = if (bits >> 125) & 3 == 3 {
        // The coefficient's implied high bits (100) make it over 10^34: non-canonical, zero.
        (((bits >> 111) & 0x3fff) as i64, 0u128)
    } else {
        (((bits >> 113) & 0x3fff) as i64, bits & ((1u128 << 113) - 1))
    };
    let coefficient = if coefficient >= 10u128.pow(34) { 0 } else { coefficient };
    let exponent = exponent - 6176;
    let digits = coefficient.to_string();
    let adjusted = exponent + digits.len() as i64 - 1;
    if exponent > 0 || adjusted < -6 {
        // Scientific notation.
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        return format!("{sign}{first}{point}E{}{adjusted}", if adjusted >= 0 { "+" } else { "" });
    }
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let shift = (-exponent) as usize;
    if digits.len() > shift {
        let (int, frac) = digits.split_at(digits.len() - shift);
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}0.{}{digits}", "0".repeat(shift - digits.len()))
    }
}

/// Test helpers: documents built the way drivers write them.
#[cfg(test)]
pub mod encode {
    /// A field's value, for [`doc`].
    pub enum V<'a> {
        /// A string.
        S(&'a str),
        /// An int32.
        I(i32),
        /// An int64.
        L(i64),
        /// A double.
        F(f64),
        /// A boolean.
        B(bool),
        /// A nested document, already encoded.
        D(Vec<u8>),
        /// An array of encoded documents.
        A(Vec<Vec<u8>>),
        /// Binary subtype 0.
        Bin(&'a [u8]),
    }

    /// The BSON bytes of a document with these fields.
    pub fn doc(fields: &[(&str, V<'_>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, v) in fields {
            let kind: u8 = match v {
                V::S(_) => 2,
                V::I(_) => 0x10,
                V::L(_) => 0x12,
                V::F(_) => 1,
                V::B(_) => 8,
                V::D(_) => 3,
                V::A(_) => 4,
                V::Bin(_) => 5,
            };
            body.push(kind);
            body.extend(name.as_bytes());
            body.push(0);
            match v {
                V::S(s) => {
                    body.extend((s.len() as i32 + 1).to_le_bytes());
                    body.extend(s.as_bytes());
                    body.push(0);
                }
                V::I(n) => body.extend(n.to_le_bytes()),
                V::L(n) => body.extend(n.to_le_bytes()),
                V::F(f) => body.extend(f.to_le_bytes()),
                V::B(b) => body.push(u8::from(*b)),
                V::D(d) => body.extend(d),
                V::A(items) => {
                    let fields: Vec<(String, Vec<u8>)> =
                        items.iter().enumerate().map(|(i, d)| (i.to_string(), d.clone())).collect();
                    let refs: Vec<(&str, V<'_>)> =
                        fields.iter().map(|(k, d)| (k.as_str(), V::D(d.clone()))).collect();
                    body.extend(doc(&refs));
                }
                V::Bin(b) => {
                    body.extend((b.len() as i32).to_le_bytes());
                    body.push(0);
                    body.extend(*b);
                }
            }
        }
        let mut out = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        out.extend(body);
        out.push(0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{doc, V};
    use super::*;
    use serde_json::json;

    fn json_of(d: &Doc) -> serde_json::Value {
        serde_json::to_value(d).unwrap()
    }

    #[test]
    fn documents_decode_in_order_as_relaxed_extended_json() {
        let inner = doc(&[("a", V::I(1))]);
        let bytes = doc(&[
            ("find", V::S("people")),
            ("filter", V::D(inner.clone())),
            ("limit", V::L(5)),
            ("ratio", V::F(0.5)),
            ("ok", V::B(true)),
            ("docs", V::A(vec![inner.clone(), inner])),
            ("raw", V::Bin(b"\x00\xff")),
        ]);
        let (d, len) = document(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert!(!d.truncated);
        assert_eq!(d.first_key(), Some("find"));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"find":"people","filter":{"a":1},"limit":5,"ratio":0.5,"ok":true,"docs":[{"a":1},{"a":1}],"raw":{"$binary":{"base64":"AP8=","subType":"00"}}}"#
        );
    }

    #[test]
    fn the_other_types_take_their_wrappers() {
        let mut body = Vec::new();
        let mut add = |kind: u8, name: &str, value: &[u8]| {
            body.push(kind);
            body.extend(name.as_bytes());
            body.push(0);
            body.extend(value);
        };
        add(0x07, "id", &[0x65, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        add(0x09, "at", &1_700_000_000_123i64.to_le_bytes());
        add(0x09, "old", &(-1i64).to_le_bytes());
        add(0x11, "ts", &[2, 0, 0, 0, 100, 0, 0, 0]);
        add(0x0B, "re", b"^a\0i\0");
        add(0x01, "inf", &f64::INFINITY.to_le_bytes());
        add(0x0A, "none", &[]);
        add(0xFF, "min", &[]);
        // 1.5 as decimal128: coefficient 15, exponent -1.
        let dec = (15u128 | ((6176u128 - 1) << 113)).to_le_bytes();
        add(0x13, "dec", &dec);
        let mut bytes = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        bytes.extend(&body);
        bytes.push(0);
        let (d, _) = document(&bytes).unwrap();
        assert_eq!(
            json_of(&d),
            json!({"id": {"$oid": "651f00000000000000000001"}, "at": {"$date": "2023-11-14T22:13:20.123Z"},
                   "old": {"$date": {"$numberLong": "-1"}}, "ts": {"$timestamp": {"t": 100, "i": 2}},
                   "re": {"$regularExpression": {"pattern": "^a", "options": "i"}},
                   "inf": {"$numberDouble": "Infinity"}, "none": null, "min": {"$minKey": 1},
                   "dec": {"$numberDecimal": "1.5"}})
        );
        assert_eq!(iso_date(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(iso_date(951_782_400_000).unwrap(), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_cut_document_keeps_what_came_before_the_cut() {
        let bytes = doc(&[("insert", V::S("c")), ("comment", V::S("a long comment"))]);
        for n in 4..bytes.len() {
            let (d, len) = document(&bytes[..n]).unwrap();
            assert_eq!(len, bytes.len());
            assert!(d.truncated || n == bytes.len() - 1, "{n}");
            if n >= 18 {
                assert_eq!(d.str("insert"), Some("c"), "{n}");
            }
        }
        assert!(document(&bytes[..3]).is_none());
        let mut bad = bytes.clone();
        bad[4] = 0x42; // an unknown type: nothing after it can be read
        let (d, _) = document(&bad).unwrap();
        assert_eq!((d.truncated, json_of(&d)), (true, json!({"insert": {"$omitted": "truncated"}})));
    }

    #[test]
    fn nesting_stops_at_the_depth_bound() {
        let mut d = doc(&[("x", V::I(1))]);
        for _ in 0..MAX_DEPTH + 5 {
            d = doc(&[("n", V::D(d))]);
        }
        let (top, _) = document(&d).unwrap();
        let mut depth = 0;
        let mut at = &top;
        while let Some(Bson::Document(inner)) = at.get("n") {
            at = inner;
            depth += 1;
        }
        assert_eq!(depth, MAX_DEPTH);
        assert!(at.truncated);
    }

    #[test]
    fn named_fields_are_omitted_at_any_depth() {
        let inner = doc(&[("payload", V::Bin(b"n,,n=user,r=abc")), ("mechanism", V::S("SCRAM-SHA-256"))]);
        let bytes =
            doc(&[("hello", V::I(1)), ("speculativeAuthenticate", V::D(inner.clone())), ("x", V::D(inner))]);
        let (mut d, _) = document(&bytes).unwrap();
        d.omit(&["speculativeAuthenticate", "payload"], "auth");
        assert_eq!(
            json_of(&d),
            json!({"hello": 1, "speculativeAuthenticate": {"$omitted": "auth"},
                   "x": {"payload": {"$omitted": "auth"}, "mechanism": "SCRAM-SHA-256"}})
        );
    }
}

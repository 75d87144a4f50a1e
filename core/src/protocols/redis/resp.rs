//! RESP2 and RESP3 values, parsed incrementally: bytes in any pieces go in,
//! whole values come out. Nothing is buffered beyond the current header
//! line; bulk data is kept up to a per-message byte budget and aggregates up
//! to a per-message item budget, the rest counted, so a 1 GiB value or an
//! array of a million items costs bounded memory.

/// Bytes of a string value, as many as the budget kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blob {
    /// The bytes kept.
    pub data: Vec<u8>,
    /// Bytes not kept (over the message's byte budget).
    pub truncated: u64,
}

impl Blob {
    /// A whole blob of `data`.
    pub fn new(data: &[u8]) -> Self {
        Self { data: data.to_vec(), truncated: 0 }
    }
}

/// The items of an aggregate, as many as the budget kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agg {
    /// Items kept (a map's keys and values alternate).
    pub items: Vec<Value>,
    /// Items not kept.
    pub omitted: u64,
}

/// One RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+` simple string.
    Simple(Blob),
    /// `-` error.
    Error(Blob),
    /// `:` integer.
    Integer(i64),
    /// `$` bulk string.
    Bulk(Blob),
    /// `_`, `$-1`, `*-1`.
    Null,
    /// `#t` / `#f`.
    Boolean(bool),
    /// `,` double, as sent.
    Double(String),
    /// `(` big number, as sent.
    BigNumber(String),
    /// `!` bulk error.
    BulkError(Blob),
    /// `=` verbatim string (its `txt:` format prefix removed).
    Verbatim(Blob),
    /// `*` array.
    Array(Agg),
    /// `~` set.
    Set(Agg),
    /// `%` map: keys and values alternate.
    Map(Agg),
    /// `>` push (RESP3 out-of-band data).
    Push(Agg),
}

impl Value {
    /// The type's name in records.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Simple(_) => "simple_string",
            Value::Error(_) => "error",
            Value::Integer(_) => "integer",
            Value::Bulk(_) => "bulk_string",
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Double(_) => "double",
            Value::BigNumber(_) => "big_number",
            Value::BulkError(_) => "bulk_error",
            Value::Verbatim(_) => "verbatim_string",
            Value::Array(_) => "array",
            Value::Set(_) => "set",
            Value::Map(_) => "map",
            Value::Push(_) => "push",
        }
    }

    /// The bytes of a string-like value.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) | Value::Verbatim(b) => Some(&b.data),
            _ => None,
        }
    }

    /// The items of an array or push.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) | Value::Push(a) => Some(&a.items),
            _ => None,
        }
    }
}

/// A whole value and when its bytes came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The value.
    pub value: Value,
    /// Time of the chunk holding its first byte.
    pub start_ts: u64,
    /// Time of the chunk holding its last byte.
    pub end_ts: u64,
}

/// Why bytes are not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// An unknown type byte.
    #[error("unknown RESP type byte {0:#04x}")]
    Type(u8),
    /// A header line over the bound or without its CR.
    #[error("bad RESP line")]
    Line,
    /// A length or integer that does not parse.
    #[error("bad RESP number")]
    Number,
    /// A bulk string not followed by CRLF.
    #[error("bulk string without its CRLF")]
    Terminator,
    /// Aggregates nested deeper than the bound.
    #[error("RESP nesting over the limit")]
    Depth,
    /// RESP3 streamed strings and aggregates (`$?`, `*?`) are not decoded.
    #[error("streamed RESP3 types are not decoded")]
    Streamed,
}

/// Bounds on what one message keeps.
#[derive(Debug, Clone, Copy)]
pub struct RespLimits {
    /// Longest header line (simple strings, errors, numbers).
    pub max_line: usize,
    /// Bulk bytes kept per message.
    pub max_bytes: usize,
    /// Values kept per message (aggregate items, at any depth).
    pub max_items: usize,
    /// Deepest nesting.
    pub max_depth: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        Self { max_line: 64 << 10, max_bytes: 1 << 20, max_items: 10_000, max_depth: 32 }
    }
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    remaining: u64,
    agg: Agg,
}

#[derive(Debug)]
enum State {
    /// Reading a header line (type byte to CRLF).
    Line,
    /// Reading `remaining` data bytes of a bulk-like value, then its CRLF.
    Bulk { kind: u8, remaining: u64, blob: Blob },
    /// The CRLF after bulk data: `got` of its 2 bytes seen.
    Crlf { kind: u8, blob: Blob, got: u8 },
}

/// An incremental parser of one direction's values.
#[derive(Debug)]
pub struct RespParser {
    limits: RespLimits,
    /// Requests may be inline commands (`PING\r\n`, as telnet sends).
    inline: bool,
    line: Vec<u8>,
    state: State,
    stack: Vec<Frame>,
    /// Attribute maps (`|`) being skipped: their depth in `stack`.
    attributes: Vec<usize>,
    kept_bytes: usize,
    kept_items: usize,
    start_ts: Option<u64>,
    /// Bytes of the message in progress fed so far.
    pub in_message: u64,
}

impl RespParser {
    /// A parser; `inline` for the request direction.
    pub fn new(limits: RespLimits, inline: bool) -> Self {
        Self {
            limits,
            inline,
            line: Vec::new(),
            state: State::Line,
            stack: Vec::new(),
            attributes: Vec::new(),
            kept_bytes: 0,
            kept_items: 0,
            start_ts: None,
            in_message: 0,
        }
    }

    /// True between messages.
    pub fn at_boundary(&self) -> bool {
        self.start_ts.is_none()
    }

    /// `len` bytes went missing. Inside a bulk string's data the value
    /// survives with them counted as truncated (true); anywhere else the
    /// message's structure is lost (false).
    pub fn gap(&mut self, len: u64) -> bool {
        match &mut self.state {
            State::Bulk { remaining, blob, .. } if *remaining >= len => {
                *remaining -= len;
                blob.truncated += len;
                self.in_message += len;
                true
            }
            _ => false,
        }
    }

    /// Parses `data` (chunk time `ts`), calling `out` for each whole value.
    /// On an error the parser is left unusable; the caller gives up on the
    /// direction. Returns the offset in `data` where the failed message began
    /// (0 when it began in an earlier chunk) with the error.
    pub fn feed(
        &mut self,
        data: &[u8],
        ts: u64,
        out: &mut impl FnMut(Parsed),
    ) -> Result<(), (usize, RespError)> {
        let mut pos = 0;
        let mut msg_start = 0;
        while pos < data.len() {
            if self.start_ts.is_none() {
                self.start_ts = Some(ts);
                msg_start = pos;
            }
            let before = pos;
            let done = self.step(data, &mut pos, ts).map_err(|e| (msg_start, e))?;
            self.in_message += (pos - before) as u64;
            if let Some(value) = done {
                let start_ts = self.start_ts.take().unwrap_or(ts);
                self.kept_bytes = 0;
                self.kept_items = 0;
                self.in_message = 0;
                out(Parsed { value, start_ts, end_ts: ts });
            }
        }
        Ok(())
    }

    /// Advances over part of `data`; a whole top-level value when one ends.
    fn step(&mut self, data: &[u8], pos: &mut usize, _ts: u64) -> Result<Option<Value>, RespError> {
        let value = match &mut self.state {
            State::Line => {
                let rest = &data[*pos..];
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    if self.line.len() + rest.len() > self.limits.max_line {
                        return Err(RespError::Line);
                    }
                    self.line.extend_from_slice(rest);
                    *pos = data.len();
                    return Ok(None);
                };
                if self.line.len() + nl > self.limits.max_line {
                    return Err(RespError::Line);
                }
                self.line.extend_from_slice(&rest[..nl]);
                *pos += nl + 1;
                if self.line.pop() != Some(b'\r') {
                    return Err(RespError::Line);
                }
                let line = std::mem::take(&mut self.line);
                match self.header(&line)? {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
            State::Bulk { remaining, blob, kind } => {
                let n = (data.len() - *pos).min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let room = self.limits.max_bytes.saturating_sub(self.kept_bytes).min(n);
                blob.data.extend_from_slice(&data[*pos..*pos + room]);
                blob.truncated += (n - room) as u64;
                self.kept_bytes += room;
                *pos += n;
                *remaining -= n as u64;
                if *remaining > 0 {
                    return Ok(None);
                }
                self.state = State::Crlf { kind: *kind, blob: std::mem::take(blob), got: 0 };
                return Ok(None);
            }
            State::Crlf { kind, blob, got } => {
                while *got < 2 && *pos < data.len() {
                    let want = if *got == 0 { b'\r' } else { b'\n' };
                    if data[*pos] != want {
                        return Err(RespError::Terminator);
                    }
                    *got += 1;
                    *pos += 1;
                }
                if *got < 2 {
                    return Ok(None);
                }
                let (kind, blob) = (*kind, std::mem::take(blob));
                self.state = State::Line;
                bulk_value(kind, blob)
            }
        };
        Ok(self.complete(Some(value)))
    }

    /// A header line: a value of its own, or the start of a bulk or aggregate.
    fn header(&mut self, line: &[u8]) -> Result<Option<Value>, RespError> {
        let Some((&kind, rest)) = line.split_first() else {
            return Err(RespError::Line);
        };
        let text = || String::from_utf8_lossy(rest).into_owned();
        Ok(Some(match kind {
            b'+' => Value::Simple(self.keep(rest)),
            b'-' => Value::Error(self.keep(rest)),
            b':' => Value::Integer(number(rest)?),
            b'_' => Value::Null,
            b'#' => match rest {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(RespError::Number),
            },
            b',' => Value::Double(text()),
            b'(' => Value::BigNumber(text()),
            b'$' | b'!' | b'=' => {
                if rest == b"?" {
                    return Err(RespError::Streamed);
                }
                let n = number(rest)?;
                if n < 0 {
                    Value::Null
                } else {
                    self.state = State::Bulk { kind, remaining: n as u64, blob: Blob::default() };
                    return Ok(None);
                }
            }
            b'*' | b'~' | b'%' | b'>' | b'|' => {
                if rest == b"?" {
                    return Err(RespError::Streamed);
                }
                let n = number(rest)?;
                if n < 0 {
                    Value::Null
                } else {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(RespError::Depth);
                    }
                    let items = if matches!(kind, b'%' | b'|') { n as u64 * 2 } else { n as u64 };
                    if kind == b'|' {
                        self.attributes.push(self.stack.len());
                    }
                    self.stack.push(Frame { kind, remaining: items, agg: Agg::default() });
                    if items > 0 {
                        return Ok(None);
                    }
                    let f = self.stack.pop().expect("just pushed");
                    return Ok(self.close_frame(f));
                }
            }
            _ if self.inline && self.stack.is_empty() => {
                // An inline command: words separated by spaces.
                let words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
                let items = words.map(|w| Value::Bulk(self.keep(w))).collect();
                Value::Array(Agg { items, omitted: 0 })
            }
            other => return Err(RespError::Type(other)),
        }))
    }

    /// Keeps as much of `bytes` as the budget allows.
    fn keep(&mut self, bytes: &[u8]) -> Blob {
        let room = self.limits.max_bytes.saturating_sub(self.kept_bytes).min(bytes.len());
        self.kept_bytes += room;
        Blob { data: bytes[..room].to_vec(), truncated: (bytes.len() - room) as u64 }
    }

    /// A finished aggregate frame: its value, or nothing for an attribute.
    fn close_frame(&mut self, f: Frame) -> Option<Value> {
        if f.kind == b'|' {
            self.attributes.pop();
            // Attributes describe the value that follows: not kept.
            return None;
        }
        Some(match f.kind {
            b'~' => Value::Set(f.agg),
            b'%' => Value::Map(f.agg),
            b'>' => Value::Push(f.agg),
            _ => Value::Array(f.agg),
        })
    }

    /// Puts a finished value into its parent; the top-level value when whole.
    fn complete(&mut self, value: Option<Value>) -> Option<Value> {
        let mut value = value;
        loop {
            let Some(v) = value.take() else {
                // An attribute ended: it counted for nothing in its parent.
                return None;
            };
            let Some(top) = self.stack.last_mut() else { return Some(v) };
            if self.kept_items < self.limits.max_items {
                self.kept_items += 1;
                top.agg.items.push(v);
            } else {
                top.agg.omitted += 1;
            }
            top.remaining -= 1;
            if top.remaining > 0 {
                return None;
            }
            let f = self.stack.pop().expect("top exists");
            value = Some(self.close_frame(f)?);
        }
    }
}

fn bulk_value(kind: u8, mut blob: Blob) -> Value {
    match kind {
        b'!' => Value::BulkError(blob),
        b'=' => {
            if blob.data.len() >= 4 && blob.data[3] == b':' {
                blob.data.drain(..4);
            }
            Value::Verbatim(blob)
        }
        _ => Value::Bulk(blob),
    }
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(RespError::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], inline: bool) -> Vec<Value> {
        let mut p = RespParser::new(RespLimits::default(), inline);
        let mut got = Vec::new();
        p.feed(bytes, 1, &mut |v| got.push(v.value)).unwrap();
        assert!(p.at_boundary());
        got
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(Blob::new(s.as_bytes()))
    }

    const EVERY_TYPE: &[u8] = b"+OK\r\n-ERR no\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n_\r\n#t\r\n,3.5\r\n(123456789012345678901234567890\r\n!3\r\nbad\r\n=8\r\ntxt:hey!\r\n*2\r\n$1\r\na\r\n:1\r\n~1\r\n+x\r\n%1\r\n+k\r\n:2\r\n>2\r\n+message\r\n$0\r\n\r\n|1\r\n+ttl\r\n:3\r\n:7\r\n*0\r\n";

    fn every_type() -> Vec<Value> {
        vec![
            Value::Simple(Blob::new(b"OK")),
            Value::Error(Blob::new(b"ERR no")),
            Value::Integer(-42),
            Value::Bulk(Blob::new(b"he\r\no")),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Boolean(true),
            Value::Double("3.5".into()),
            Value::BigNumber("123456789012345678901234567890".into()),
            Value::BulkError(Blob::new(b"bad")),
            Value::Verbatim(Blob::new(b"hey!")),
            Value::Array(Agg { items: vec![bulk("a"), Value::Integer(1)], omitted: 0 }),
            Value::Set(Agg { items: vec![Value::Simple(Blob::new(b"x"))], omitted: 0 }),
            Value::Map(Agg { items: vec![Value::Simple(Blob::new(b"k")), Value::Integer(2)], omitted: 0 }),
            Value::Push(Agg { items: vec![Value::Simple(Blob::new(b"message")), bulk("")], omitted: 0 }),
            // The attribute is skipped; the value it describes stays.
            Value::Integer(7),
            Value::Array(Agg::default()),
        ]
    }

    #[test]
    fn every_resp2_and_resp3_type() {
        assert_eq!(parse_all(EVERY_TYPE, false), every_type());
    }

    #[test]
    fn split_at_every_boundary_gives_the_same_values() {
        for cut in 0..=EVERY_TYPE.len() {
            for cut2 in [cut, (cut + 7).min(EVERY_TYPE.len())] {
                let mut p = RespParser::new(RespLimits::default(), false);
                let mut got = Vec::new();
                for piece in [&EVERY_TYPE[..cut], &EVERY_TYPE[cut..cut2], &EVERY_TYPE[cut2..]] {
                    p.feed(piece, 1, &mut |v| got.push(v.value)).unwrap();
                }
                assert_eq!(got, every_type(), "cut at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn inline_commands_on_the_request_side_only() {
        assert_eq!(
            parse_all(b"SET k  v\r\nPING\r\n", true),
            vec![
                Value::Array(Agg { items: vec![bulk("SET"), bulk("k"), bulk("v")], omitted: 0 }),
                Value::Array(Agg { items: vec![bulk("PING")], omitted: 0 }),
            ]
        );
        let mut p = RespParser::new(RespLimits::default(), false);
        assert_eq!(p.feed(b"PING\r\n", 1, &mut |_| {}), Err((0, RespError::Type(b'P'))));
    }

    #[test]
    fn budgets_bound_bytes_and_items_and_count_the_rest() {
        let limits = RespLimits { max_line: 16, max_bytes: 4, max_items: 2, max_depth: 2 };
        let mut p = RespParser::new(limits, false);
        let mut got = Vec::new();
        p.feed(b"*3\r\n$6\r\nabcdef\r\n$2\r\ngh\r\n:1\r\n$3\r\nxyz\r\n", 5, &mut |v| got.push(v)).unwrap();
        let first = Value::Array(Agg {
            items: vec![
                Value::Bulk(Blob { data: b"abcd".to_vec(), truncated: 2 }),
                Value::Bulk(Blob { data: vec![], truncated: 2 }),
            ],
            omitted: 1,
        });
        // Budgets are per message: the next one starts afresh.
        assert_eq!(got.iter().map(|p| p.value.clone()).collect::<Vec<_>>(), vec![first, bulk("xyz")]);
        assert_eq!(p.feed(b"*1\r\n*1\r\n*1\r\n:1\r\n", 1, &mut |_| {}), Err((0, RespError::Depth)));
        let mut p = RespParser::new(limits, false);
        assert_eq!(p.feed(b"+0123456789abcdefg", 1, &mut |_| {}), Err((0, RespError::Line)));
    }

    #[test]
    fn a_gap_inside_bulk_data_is_counted_and_the_value_survives() {
        let mut p = RespParser::new(RespLimits::default(), false);
        let mut got = Vec::new();
        p.feed(b"$10\r\nab", 1, &mut |v| got.push(v.value)).unwrap();
        assert!(p.gap(5));
        p.feed(b"hij\r\n+OK\r\n", 2, &mut |v| got.push(v.value)).unwrap();
        assert_eq!(
            got,
            vec![
                Value::Bulk(Blob { data: b"abhij".to_vec(), truncated: 5 }),
                Value::Simple(Blob::new(b"OK"))
            ]
        );
        assert!(!p.gap(1), "between messages the structure is lost");
    }

    #[test]
    fn errors_say_where_the_failed_message_began() {
        let mut p = RespParser::new(RespLimits::default(), false);
        let mut n = 0;
        assert_eq!(p.feed(b"+OK\r\n$3\r\nabcX\r\n", 1, &mut |_| n += 1), Err((5, RespError::Terminator)));
        assert_eq!(n, 1);
        let mut p = RespParser::new(RespLimits::default(), false);
        assert_eq!(p.feed(b":12x\r\n", 1, &mut |_| {}), Err((0, RespError::Number)));
        let mut p = RespParser::new(RespLimits::default(), false);
        assert_eq!(p.feed(b"$?\r\n", 1, &mut |_| {}), Err((0, RespError::Streamed)));
    }
}

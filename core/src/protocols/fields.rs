//! Header and trailer fields in order, every name and value in one text
//! buffer: a message's fields cost two allocations, not two per field.
//! An HTTP/1 head whose fields are valid UTF-8 (nearly every one) is copied
//! with one `memcpy` of the bytes they span.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::fmt;

/// Where one field's name and value lie in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Fields (name, value) in the order they came; names as sent (case kept).
#[derive(Clone, Default)]
pub struct Fields {
    text: String,
    spans: Vec<Span>,
}

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// HTTP/1 header fields as httparse found them, every name and value a
    /// slice of `head` (the message's bytes). Values that are not UTF-8 are
    /// decoded lossily, as [`Fields::push_lossy`] does.
    pub fn from_head(head: &[u8], headers: &[httparse::Header<'_>]) -> Self {
        let mut f = Fields::new();
        f.fill_from_head(head, headers);
        f
    }

    /// [`Fields::from_head`] into these buffers (what they held is gone).
    pub fn fill_from_head(&mut self, head: &[u8], headers: &[httparse::Header<'_>]) {
        self.clear();
        if self.copy_whole(head, headers) {
            return;
        }
        self.clear();
        self.text.reserve(headers.iter().map(|h| h.name.len() + h.value.len()).sum());
        self.spans.reserve(headers.len());
        for h in headers {
            self.push_lossy(h.name, h.value);
        }
    }

    /// The fields as one copy of the bytes from the first name to the last
    /// value; false when those bytes are not UTF-8, or (never with httparse,
    /// checked so that nothing rests on it) a slice is not inside `head`,
    /// in order.
    fn copy_whole(&mut self, head: &[u8], headers: &[httparse::Header<'_>]) -> bool {
        let base = head.as_ptr() as usize;
        let offset = |s: &[u8]| {
            let start = (s.as_ptr() as usize).wrapping_sub(base);
            (start <= head.len() && s.len() <= head.len() - start).then_some(start)
        };
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else { return true };
        let (Some(lo), Some(last_value)) = (offset(first.name.as_bytes()), offset(last.value)) else {
            return false;
        };
        let hi = last_value + last.value.len();
        if hi < lo || hi - lo > u32::MAX as usize {
            return false;
        }
        let mut at = lo;
        for h in headers {
            let (Some(name), Some(value)) = (offset(h.name.as_bytes()), offset(h.value)) else {
                return false;
            };
            let (name_end, value_end) = (name + h.name.len(), value + h.value.len());
            if name < at || value < name_end || value_end > hi {
                return false;
            }
            at = value_end;
            let rel = |a: usize, b: usize| ((a - lo) as u32, (b - lo) as u32);
            self.spans.push(Span { name: rel(name, name_end), value: rel(value, value_end) });
        }
        let Ok(text) = simdutf8::basic::from_utf8(&head[lo..hi]) else { return false };
        // httparse's slices end next to ASCII delimiters, so this holds; checked
        // because reading a field slices the text there.
        let bound =
            |(a, b): (u32, u32)| text.is_char_boundary(a as usize) && text.is_char_boundary(b as usize);
        if !self.spans.iter().all(|s| bound(s.name) && bound(s.value)) {
            return false;
        }
        self.text.push_str(text);
        true
    }

    /// Appends a field. A field that would take the text past 4 GiB is not
    /// kept (heads are bounded far below that).
    pub fn push(&mut self, name: &str, value: &str) {
        let Some(name) = self.append(name) else { return };
        match self.append(value) {
            Some(value) => self.spans.push(Span { name, value }),
            None => self.text.truncate(name.0 as usize),
        }
    }

    /// Appends a field whose value may not be UTF-8: invalid sequences are
    /// replaced (U+FFFD), as `String::from_utf8_lossy` does.
    pub fn push_lossy(&mut self, name: &str, value: &[u8]) {
        match std::str::from_utf8(value) {
            Ok(v) => self.push(name, v),
            Err(_) => self.push(name, &String::from_utf8_lossy(value)),
        }
    }

    fn append(&mut self, s: &str) -> Option<(u32, u32)> {
        let start = self.text.len();
        let end = u32::try_from(start + s.len()).ok()?;
        self.text.push_str(s);
        Some((start as u32, end))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No field at all.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Removes every field, keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    /// Removes every field, keeping the buffers unless the text's grew past
    /// `max_text` bytes (then both are freed).
    pub fn clear_within(&mut self, max_text: usize) {
        if self.text.capacity() > max_text {
            *self = Fields::new();
        }
        self.clear();
    }

    /// Field `i` as (name, value).
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        self.spans.get(i).map(|s| self.field(s))
    }

    fn field(&self, s: &Span) -> (&str, &str) {
        (self.at(s.name), self.at(s.value))
    }

    /// The text between two offsets of a span.
    fn at(&self, (start, end): (u32, u32)) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// The first value of field `name` (case-insensitive).
    pub fn value(&self, name: &str) -> Option<&str> {
        // Names compared as bytes: only the value found is sliced as text.
        let text = self.text.as_bytes();
        let s = self.spans.iter().find(|s| {
            let n = &text[s.name.0 as usize..s.name.1 as usize];
            n.len() == name.len() && n.eq_ignore_ascii_case(name.as_bytes())
        })?;
        Some(self.at(s.value))
    }

    /// The names in order, as bytes (no text is sliced: a caller looking for
    /// a few names reads only the values of those, with [`Fields::get`]).
    pub fn names(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let text = self.text.as_bytes();
        self.spans.iter().map(move |s| &text[s.name.0 as usize..s.name.1 as usize])
    }

    /// The fields in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { fields: self, spans: self.spans.iter() }
    }

    /// Replaces field `i`'s value. The new value is appended to the text and
    /// the old one overwritten with `*`, so what it held (a credential being
    /// redacted) is not kept in memory.
    pub fn set_value(&mut self, i: usize, value: &str) {
        let Some(&Span { value: old, .. }) = self.spans.get(i) else { return };
        let Some(new) = self.append(value) else { return };
        let stars = "*".repeat((old.1 - old.0) as usize);
        self.text.replace_range(old.0 as usize..old.1 as usize, &stars);
        self.spans[i].value = new;
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when the fields are, whatever the text between them.
impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut f = Fields::new();
        f.extend(iter);
        f
    }
}

impl<N: AsRef<str>, V: AsRef<str>> Extend<(N, V)> for Fields {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (n, v) in iter {
            self.push(n.as_ref(), v.as_ref());
        }
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Fields in order, as (name, value).
#[derive(Clone)]
pub struct Iter<'a> {
    fields: &'a Fields,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        self.spans.next().map(|s| self.fields.field(s))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.spans.next_back().map(|s| self.fields.field(s))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// As records write them: `[["name", "value"], ...]`.
impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (n, v) in self {
            seq.serialize_element(&[n, v])?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(f: &Fields) -> Vec<(&str, &str)> {
        f.iter().collect()
    }

    fn parsed(head: &[u8]) -> Fields {
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut h);
        assert!(req.parse(head).unwrap().is_complete());
        Fields::from_head(head, req.headers)
    }

    #[test]
    fn a_head_is_copied_once_and_read_back_field_by_field() {
        let f = parsed(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Empty:\r\nAccept:  */* \r\n\r\n");
        assert_eq!(pairs(&f), [("Host", "a.test"), ("X-Empty", ""), ("Accept", "*/*")]);
        assert_eq!(f.text, "Host: a.test\r\nX-Empty:\r\nAccept:  */*", "one copy of what the fields span");
        assert_eq!(f.value("accept"), Some("*/*"));
        assert_eq!(f.value("cookie"), None);
        assert_eq!(f.get(1), Some(("X-Empty", "")));
        assert_eq!(f.iter().next_back(), Some(("Accept", "*/*")));
    }

    #[test]
    fn values_that_are_not_utf8_are_decoded_lossily_each_on_its_own() {
        let f = parsed(b"GET / HTTP/1.1\r\nA: caf\xe9\r\nB: ok \xc3\xa9\r\n\r\n");
        assert_eq!(pairs(&f), [("A", "caf\u{fffd}"), ("B", "ok \u{e9}")]);
    }

    #[test]
    fn a_head_without_fields_is_empty() {
        let f = parsed(b"GET / HTTP/1.1\r\n\r\n");
        assert!(f.is_empty() && f.text.is_empty());
        assert_eq!(f, Fields::new());
    }

    #[test]
    fn slices_outside_the_head_are_copied_one_by_one() {
        let other = b"elsewhere".to_vec();
        let h = [httparse::Header { name: "N", value: &other }];
        assert_eq!(pairs(&Fields::from_head(b"unrelated bytes", &h)), [("N", "elsewhere")]);
    }

    #[test]
    fn a_slice_that_splits_a_character_is_decoded_on_its_own() {
        let head = "A\u{e9}".as_bytes();
        let h = [httparse::Header { name: std::str::from_utf8(&head[..1]).unwrap(), value: &head[2..3] }];
        assert_eq!(pairs(&Fields::from_head(head, &h)), [("A", "\u{fffd}")]);
    }

    #[test]
    fn set_value_replaces_and_overwrites_the_old_bytes() {
        let mut f: Fields = [("Cookie", "sid=secret"), ("Host", "h")].into_iter().collect();
        f.set_value(0, "REDACTED");
        assert_eq!(pairs(&f), [("Cookie", "REDACTED"), ("Host", "h")]);
        assert!(!f.text.contains("secret"), "{}", f.text);
        f.set_value(9, "none such");
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn equality_debug_and_json_follow_the_fields() {
        let a = parsed(b"GET / HTTP/1.1\r\nA: 1\r\nB: \"2\"\r\n\r\n");
        let b: Fields = [("A", "1"), ("B", "\"2\"")].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, [("A", "1")].into_iter().collect());
        assert_eq!(format!("{a:?}"), r#"[("A", "1"), ("B", "\"2\"")]"#);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"[["A","1"],["B","\"2\""]]"#);
    }
}

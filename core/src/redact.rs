//! Secrets out of records before any of them leaves the sensor (file,
//! terminal, HAR, API). Values of the named headers (by default
//! `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`) and of
//! the named JSON, form and query fields become a marker that keeps the
//! length class and a keyed hash: `REDACTED(len=16-31,hmac=3f2a9c1e4b5d)`.
//! Equal secrets get equal markers (within one key: random per run unless a
//! key file is given), so a replayed token is recognisable without being
//! readable, and the hash cannot be reversed by guessing short passwords
//! without the key. Names of cookies and the scheme of `Authorization`
//! stay: they are not secret and say what was sent.

use crate::protocols::db::DbExchange;
use crate::protocols::exchange::{Exchange, Message};
use crate::protocols::mongodb::bson::Bson;
use ring::hmac;
/// Names looked up once per header and JSON key of every exchange: a fast
/// seeded hash, not SipHash (the sets hold configured names only).
type HashSet<T> = foldhash::HashSet<T>;

/// Headers redacted unless the configuration says otherwise.
pub const DEFAULT_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];

/// JSON, form and query fields redacted unless the configuration says otherwise.
pub const DEFAULT_FIELDS: [&str; 10] = [
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "api_key",
    "apikey",
];

/// Which connections a capture target's redaction rules apply to.
#[derive(Debug, Clone)]
pub struct TargetMatch {
    /// Process names (`comm`); any when empty.
    pub processes: Vec<String>,
    /// Ports at either end; any when empty.
    pub ports: Vec<u16>,
}

impl TargetMatch {
    fn matches(&self, comm: &str, ports: [u16; 2]) -> bool {
        (self.processes.is_empty() || self.processes.iter().any(|p| p == comm))
            && (self.ports.is_empty() || self.ports.iter().any(|p| ports.contains(p)))
    }
}

/// The redactor for each connection: the first capture target matching it,
/// or the global one. `None` for a target means "written as captured".
#[derive(Debug, Clone)]
pub struct Policy {
    global: Redactor,
    targets: Vec<(TargetMatch, Option<Redactor>)>,
}

impl Policy {
    /// `global` for every connection no target matches.
    pub fn new(global: Redactor, targets: Vec<(TargetMatch, Option<Redactor>)>) -> Self {
        Policy { global, targets }
    }

    /// The redactor for a connection of process `comm` between these ports.
    pub fn for_conn(&self, comm: &str, ports: [u16; 2]) -> Option<&Redactor> {
        match self.targets.iter().find(|(m, _)| m.matches(comm, ports)) {
            Some((_, r)) => r.as_ref(),
            None => Some(&self.global),
        }
    }
}

/// What to redact and with which key.
#[derive(Clone)]
pub struct Redactor {
    headers: HashSet<String>,
    fields: HashSet<String>,
    /// The lengths of `headers` and of `fields` (`len_bit`): a name of
    /// another length is passed over without lower-casing or hashing it.
    header_lens: u64,
    field_lens: u64,
    key: hmac::Key,
}

/// One bit per name length up to 63; every longer length shares bit 0.
fn len_bit(len: usize) -> u64 {
    1 << if len < 64 { len } else { 0 }
}

fn len_bits(names: &HashSet<String>) -> u64 {
    names.iter().fold(0, |bits, n| bits | len_bit(n.len()))
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("headers", &self.headers).field("fields", &self.fields).finish()
    }
}

impl Redactor {
    /// Redacts `headers` and `fields` (names compared without case) with an
    /// HMAC-SHA-256 key made of `key` bytes.
    pub fn new<'a>(
        headers: impl IntoIterator<Item = &'a str>,
        fields: impl IntoIterator<Item = &'a str>,
        key: &[u8],
    ) -> Self {
        let headers: HashSet<String> = headers.into_iter().map(str::to_ascii_lowercase).collect();
        let fields: HashSet<String> = fields.into_iter().map(str::to_ascii_lowercase).collect();
        Redactor {
            header_lens: len_bits(&headers),
            field_lens: len_bits(&fields),
            headers,
            fields,
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// This redactor plus more headers and fields, with the same key (so
    /// markers of a target and of the rest still compare).
    pub fn with<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a str>,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut more = self.clone();
        more.headers.extend(headers.into_iter().map(str::to_ascii_lowercase));
        more.fields.extend(fields.into_iter().map(str::to_ascii_lowercase));
        more.header_lens = len_bits(&more.headers);
        more.field_lens = len_bits(&more.fields);
        more
    }

    /// The marker standing for `secret`.
    pub fn marker(&self, secret: &[u8]) -> String {
        let tag = hmac::sign(&self.key, secret);
        let hex: String = tag.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("REDACTED(len={},hmac={hex})", length_class(secret.len()))
    }

    /// Redacts the named fields of a database exchange's documents (MongoDB:
    /// at any depth, whatever the value's type; a string's marker hashes its
    /// text, another value's its relaxed Extended JSON).
    pub fn db(&self, e: &mut DbExchange) {
        let DbExchange::Mongodb(m) = e else { return };
        if self.fields.is_empty() {
            return;
        }
        let wanted = |k: &str| self.fields.contains(&k.to_ascii_lowercase());
        let replace = |v: &Bson| match v {
            Bson::String(t) => Bson::String(self.marker(t.as_bytes())),
            other => Bson::String(self.marker(serde_json::to_string(other).unwrap_or_default().as_bytes())),
        };
        let messages =
            std::iter::once(&mut m.request.message).chain(m.response.as_mut().map(|r| &mut r.message));
        for msg in messages {
            for d in msg.document.iter_mut().chain(msg.more_documents.iter_mut()) {
                d.replace_named(&wanted, &replace);
            }
        }
    }

    /// Redacts both halves of an exchange in place.
    pub fn exchange(&self, e: &mut Exchange) {
        self.message(&mut e.request, true);
        if let Some(r) = &mut e.response {
            self.message(r, false);
        }
    }

    fn message(&self, m: &mut Message, request: bool) {
        let mut lower = String::new(); // one buffer for every name: this runs per exchange
        for fields in [&mut m.head.headers, &mut m.trailers] {
            for i in 0..fields.len() {
                let Some((name, value)) = fields.get(i) else { break };
                let mut redacted = None;
                if self.header_lens & len_bit(name.len()) != 0 {
                    lower.clear();
                    lower.push_str(name);
                    lower.make_ascii_lowercase();
                    if self.headers.contains(&lower) {
                        redacted = Some(self.header_value(&lower, value));
                    }
                }
                if redacted.is_none() && name.eq_ignore_ascii_case(":path") {
                    redacted = self.target(value);
                }
                if let Some(v) = redacted {
                    fields.set_value(i, &v);
                }
            }
        }
        if request {
            if let Some(t) = self.target(&m.head.target) {
                m.head.target = t;
            }
        }
        if self.fields.is_empty() || m.body.is_empty() {
            return;
        }
        let kind = m.head.header("content-type").unwrap_or_default().as_bytes();
        let has = |word: &[u8]| kind.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
        if has(b"x-www-form-urlencoded") {
            if let Some(body) = self.form(&m.body) {
                m.body = body;
            }
        } else if has(b"json") || (kind.is_empty() && m.body.first() == Some(&b'{')) {
            if let Some(body) = self.json(&m.body) {
                m.body = body;
            }
        }
    }

    fn header_value(&self, name: &str, value: &str) -> String {
        match name {
            // `Bearer abc`: the scheme stays.
            "authorization" | "proxy-authorization" => match value.split_once(' ') {
                Some((scheme, cred)) if !scheme.is_empty() => {
                    format!("{scheme} {}", self.marker(cred.as_bytes()))
                }
                _ => self.marker(value.as_bytes()),
            },
            // `a=1; b=2`: the names stay.
            "cookie" => value
                .split(';')
                .map(|c| match c.split_once('=') {
                    Some((n, v)) => format!("{n}={}", self.marker(v.as_bytes())),
                    None => self.marker(c.as_bytes()),
                })
                .collect::<Vec<_>>()
                .join(";"),
            // `id=abc; Path=/; HttpOnly`: the name and attributes stay.
            "set-cookie" => {
                let (pair, attrs) = value.split_once(';').map_or((value, None), |(p, a)| (p, Some(a)));
                let pair = match pair.split_once('=') {
                    Some((n, v)) => format!("{n}={}", self.marker(v.as_bytes())),
                    None => self.marker(pair.as_bytes()),
                };
                attrs.map_or(pair.clone(), |a| format!("{pair};{a}"))
            }
            _ => self.marker(value.as_bytes()),
        }
    }

    /// A request target with the named query parameters' values redacted;
    /// `None` when it has no query or its query names no field (left as it is).
    fn target(&self, target: &str) -> Option<String> {
        match target.split_once('?') {
            Some((path, query)) if !self.fields.is_empty() => {
                let query = self.form(query.as_bytes())?;
                Some(format!("{path}?{}", String::from_utf8_lossy(&query)))
            }
            _ => None,
        }
    }

    /// `a=1&password=x`: the named fields' values redacted, the rest as sent.
    /// `None` when no field is named (the body stays as it is, uncopied).
    fn form(&self, body: &[u8]) -> Option<Vec<u8>> {
        // Most queries and forms name no field: found without copying.
        if !body.split(|&b| b == b'&').any(|pair| self.names_field(pair)) {
            return None;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut redacted = false;
        for (i, pair) in body.split(|&b| b == b'&').enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            match pair.iter().position(|&b| b == b'=') {
                Some(eq) if self.names_field(pair) => {
                    redacted = true;
                    out.extend_from_slice(&pair[..=eq]);
                    out.extend_from_slice(self.marker(&pair[eq + 1..]).as_bytes());
                }
                _ => out.extend_from_slice(pair),
            }
        }
        redacted.then_some(out)
    }

    /// Whether the form pair `name=value` names a redacted field. A name
    /// without escapes whose length no field has is passed over without
    /// decoding it.
    fn names_field(&self, pair: &[u8]) -> bool {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else { return false };
        let raw = &pair[..eq];
        let escaped = raw.iter().any(|&b| b == b'%' || b == b'+');
        (escaped || self.field_lens & len_bit(raw.len()) != 0) && self.fields.contains(&form_name(raw))
    }

    /// The named members' values (whatever their type) replaced by the
    /// marker as a JSON string, everywhere in the document; bytes outside
    /// them are kept as sent. A body cut short or not quite JSON is
    /// redacted as far as it can be read. `None` when no member is named.
    fn json(&self, body: &[u8]) -> Option<Vec<u8>> {
        memchr::memchr(b'{', body)?; // no object, no member
        let spans = json_value_spans(body, |key| {
            self.field_lens & len_bit(key.len()) != 0 && self.fields.contains(&key.to_ascii_lowercase())
        });
        if spans.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut at = 0;
        for (start, end) in spans {
            out.extend_from_slice(&body[at..start]);
            let value = &body[start..end];
            let inner = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            out.push(b'"');
            out.extend_from_slice(self.marker(inner).as_bytes());
            out.push(b'"');
            at = end;
        }
        out.extend_from_slice(&body[at..]);
        Some(out)
    }
}

/// `0`, `1-7`, `8-15`, `16-31`, …: how long, not exactly.
fn length_class(n: usize) -> String {
    match n {
        0 => "0".into(),
        1..=7 => "1-7".into(),
        _ => {
            let low = 1usize << (usize::BITS - 1 - n.leading_zeros());
            format!("{low}-{}", low * 2 - 1)
        }
    }
}

/// A form or query name, percent- and `+`-decoded, lower case.
fn form_name(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (raw[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// Byte ranges of the values of object members whose key `wanted` accepts,
/// in order, not nested in one another.
fn json_value_spans(b: &[u8], wanted: impl Fn(&str) -> bool) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    // Per open container: true for an object.
    let mut stack: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                stack.push(true);
                expect_key = true;
                i += 1;
            }
            b'[' => {
                stack.push(false);
                expect_key = false;
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
                i += 1;
            }
            b',' => {
                expect_key = stack.last() == Some(&true);
                i += 1;
            }
            b'"' => {
                let Some(end) = string_end(b, i) else { break };
                if !expect_key {
                    i = end;
                    continue;
                }
                expect_key = false;
                let raw = &b[i + 1..end - 1];
                // Escapes decoded: `"pass\u0077ord"` is `password` to every JSON reader.
                // A key without them is its bytes (no copy).
                let key = match std::str::from_utf8(raw) {
                    Ok(k) if !raw.contains(&b'\\') => std::borrow::Cow::Borrowed(k),
                    _ => std::borrow::Cow::Owned(
                        serde_json::from_slice::<String>(&b[i..end])
                            .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()),
                    ),
                };
                i = end;
                // The value after the colon.
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b':') {
                    i += 1;
                }
                if i < b.len() && wanted(&key) {
                    let Some(end) = value_end(b, i) else {
                        spans.push((i, b.len()));
                        break;
                    };
                    spans.push((i, end));
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
    spans
}

/// The index after the closing quote of the string opening at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after the JSON value starting at `start`; `None` when the
/// document ends inside it.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b[start] {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len =
                b[start..].iter().position(|&c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace());
            Some(len.map_or(b.len(), |l| start + l))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::exchange::{Head, Message};
    use crate::protocols::fields::Fields;

    fn redactor() -> Redactor {
        Redactor::new(DEFAULT_HEADERS, DEFAULT_FIELDS, b"test key")
    }

    fn request(headers: &[(&str, &str)], target: &str, body: &[u8]) -> Exchange {
        let head = Head {
            method: "POST".into(),
            target: target.into(),
            headers: headers.iter().copied().collect(),
            ..Head::default()
        };
        Exchange::new(Box::new(Message { head, body: body.to_vec(), ..Message::default() }), None)
    }

    #[test]
    fn nothing_named_leaves_the_message_as_sent() {
        let r = redactor();
        for body in [&b"[1, \"password\", {\"passwordx\": 1}]"[..], b"password=1", b"no object: token"] {
            let headers = [("Content-Type", "application/json"), ("Authorizations", "x"), ("X-Cookie", "y")];
            let mut e = request(&headers, "/a?passwords=1&x=token", body);
            let before = e.clone();
            r.exchange(&mut e);
            assert_eq!(e, before, "{}", String::from_utf8_lossy(body));
        }
        // The same names are found whatever their case.
        let mut e = request(&[("COOKIE", "a=b")], "/a?TOKEN=1", br#"{"Token": 1}"#);
        r.exchange(&mut e);
        assert!(e.request.head.headers.get(0).unwrap().1.starts_with("a=REDACTED("), "{:?}", e.request.head);
        assert!(e.request.head.target.starts_with("/a?TOKEN=REDACTED("), "{}", e.request.head.target);
        assert!(String::from_utf8_lossy(&e.request.body).starts_with(r#"{"Token": "REDACTED("#));
    }

    #[test]
    fn the_first_matching_target_decides_and_keeps_the_key() {
        let global = redactor();
        let payments = global.with(["x-card-token"], ["card_number"]);
        let policy = Policy::new(
            global.clone(),
            vec![
                (TargetMatch { processes: vec![], ports: vec![8443] }, Some(payments)),
                (TargetMatch { processes: vec!["curl".into()], ports: vec![] }, None),
                (TargetMatch { processes: vec!["python3".into()], ports: vec![9000] }, None),
            ],
        );
        let body = br#"{"card_number":"4111111111111111","password":"pw-123456"}"#;
        let headers = [("X-Card-Token", "tok-1"), ("Authorization", "Basic abc")];
        let redacted = |comm: &str, ports: [u16; 2]| {
            let mut e = request(&headers, "/", body);
            if let Some(r) = policy.for_conn(comm, ports) {
                r.exchange(&mut e);
            }
            (e.request.head.headers.clone(), String::from_utf8(e.request.body).unwrap())
        };
        // Port 8443 at either end: global rules plus the target's.
        let (h, b) = redacted("curl", [51000, 8443]);
        assert!(h.iter().all(|(_, v)| v.contains("REDACTED(")), "{h:?}");
        assert!(!b.contains("4111") && !b.contains("pw-123456"), "{b}");
        assert!(b.contains(&global.marker(b"pw-123456")), "same key as the rest: {b}");
        // curl elsewhere: its target turns redaction off.
        let (h, b) = redacted("curl", [51000, 80]);
        assert_eq!(h.get(1).unwrap().1, "Basic abc");
        assert!(b.contains("pw-123456"));
        // Both selectors must match; otherwise the global rules, without the target's extras.
        let (h, b) = redacted("python3", [51000, 80]);
        assert_eq!(h.get(0).unwrap().1, "tok-1");
        assert!(h.get(1).unwrap().1.starts_with("Basic REDACTED("), "{h:?}");
        assert!(b.contains("4111111111111111") && !b.contains("pw-123456"), "{b}");
        assert!(policy.for_conn("python3", [9000, 1]).is_none());
    }

    #[test]
    fn markers_keep_length_class_and_equal_secrets_match() {
        let r = redactor();
        let m = r.marker(b"hunter2hunter2");
        assert!(m.starts_with("REDACTED(len=8-15,hmac=") && m.ends_with(')') && m.len() == 36, "{m}");
        assert_eq!(m, r.marker(b"hunter2hunter2"));
        assert_ne!(m, r.marker(b"hunter2hunter3"));
        assert_ne!(m, Redactor::new(DEFAULT_HEADERS, DEFAULT_FIELDS, b"other key").marker(b"hunter2hunter2"));
        assert_eq!(length_class(0), "0");
        assert_eq!(length_class(7), "1-7");
        assert_eq!(length_class(8), "8-15");
        assert_eq!(length_class(31), "16-31");
        assert_eq!(length_class(1000), "512-1023");
    }

    #[test]
    fn named_headers_keep_scheme_and_cookie_names() {
        let r = redactor();
        let mut e = request(
            &[
                ("Authorization", "Bearer abc.def"),
                ("Cookie", "sid=s3cr3t; theme=dark"),
                ("X-Other", "visible"),
                ("proxy-authorization", "opaque"),
            ],
            "/",
            b"",
        );
        e.response = Some(Box::new(Message {
            head: Head {
                headers: Fields::from_iter([("Set-Cookie", "sid=n3w; Path=/; HttpOnly")]),
                ..Head::default()
            },
            ..Message::default()
        }));
        r.exchange(&mut e);
        let h = &e.request.head.headers;
        assert_eq!(h.get(0).unwrap().1, format!("Bearer {}", r.marker(b"abc.def")));
        assert_eq!(h.get(1).unwrap().1, format!("sid={}; theme={}", r.marker(b"s3cr3t"), r.marker(b"dark")));
        assert_eq!(h.get(2).unwrap().1, "visible");
        assert_eq!(h.get(3).unwrap().1, r.marker(b"opaque"));
        let response = e.response.unwrap();
        let set = response.head.headers.get(0).unwrap().1;
        assert_eq!(set, format!("sid={}; Path=/; HttpOnly", r.marker(b"n3w")));
    }

    #[test]
    fn json_form_and_query_fields() {
        let r = redactor();
        let body = br#"{"user": "ann", "Pass\u0077ord" : "p\"w", "nested": {"token": 12345, "keep": [1, {"secret": {"a": "}"}}]}}"#;
        let mut e = request(&[("Content-Type", "application/json")], "/login?next=/&access_token=abc", body);
        r.exchange(&mut e);
        let got = String::from_utf8(e.request.body.clone()).unwrap();
        let want = format!(
            r#"{{"user": "ann", "Pass\u0077ord" : "{}", "nested": {{"token": "{}", "keep": [1, {{"secret": "{}"}}]}}}}"#,
            r.marker(br#"p\"w"#),
            r.marker(b"12345"),
            r.marker(br#"{"a": "}"}"#)
        );
        assert_eq!(got, want);
        serde_json::from_str::<serde_json::Value>(&got).expect("still JSON");
        assert_eq!(e.request.head.target, format!("/login?next=/&access_token={}", r.marker(b"abc")));

        let mut f = request(
            &[("content-type", "application/x-www-form-urlencoded")],
            "/",
            b"user=ann&pass%77ord=x+y&token",
        );
        r.exchange(&mut f);
        assert_eq!(f.request.body, format!("user=ann&pass%77ord={}&token", r.marker(b"x+y")).into_bytes());
    }

    #[test]
    fn bodies_cut_short_are_redacted_as_far_as_they_go() {
        let r = redactor();
        let mut e = request(&[("content-type", "application/json")], "/", br#"{"a": 1, "password": "abc"#);
        r.exchange(&mut e);
        assert_eq!(
            e.request.body,
            format!(r#"{{"a": 1, "password": "{}""#, r.marker(br#""abc"#)).into_bytes()
        );
        // Not JSON at all: left alone, no panic.
        for junk in [&b"}}}]]]"[..], b"\"", b"{\"password\"", b"{\"password\":", b"[\"password\", 1]"] {
            let mut e = request(&[("content-type", "application/json")], "/", junk);
            r.exchange(&mut e);
        }
    }
}

//! Redaction of arbitrary bodies, targets and headers: no panic, and a body
//! that was JSON is still JSON, with none of the named members' string
//! values left (unless the marker happens to equal it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::exchange::{Exchange, Fields, Head, Message};
use nettap_core::redact::{Redactor, DEFAULT_FIELDS, DEFAULT_HEADERS};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (head_bytes, body) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let text = String::from_utf8_lossy(head_bytes).into_owned();
    let content_type =
        ["application/json", "application/x-www-form-urlencoded", "text/plain", ""][kind as usize % 4];
    let head = Head {
        method: "POST".into(),
        target: text.clone(),
        headers: Fields::from_iter([
            ("Content-Type", content_type),
            ("Authorization", text.as_str()),
            ("Cookie", text.as_str()),
            ("Set-Cookie", text.as_str()),
        ]),
        ..Head::default()
    };
    let mut e = Exchange::new(Box::new(Message { head, body: body.to_vec(), ..Message::default() }), None);
    let r = Redactor::new(DEFAULT_HEADERS, DEFAULT_FIELDS, b"fuzz key");
    r.exchange(&mut e);
    if content_type == "application/json" {
        if let Ok(before) = serde_json::from_slice::<serde_json::Value>(body) {
            let after: serde_json::Value = serde_json::from_slice(&e.request.body).unwrap_or_else(|err| {
                panic!("redaction broke JSON: {err}: {}", String::from_utf8_lossy(&e.request.body))
            });
            assert_eq!(shape(&before), shape(&after), "the same members in the same places");
        }
    }
});

/// The document with every value under a named key, and every scalar,
/// blanked: what redaction must leave unchanged.
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let named = DEFAULT_FIELDS.contains(&k.to_ascii_lowercase().as_str());
                    (k.clone(), if named { Value::Null } else { shape(v) })
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

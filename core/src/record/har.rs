//! An exchange as a HAR 1.2 entry (`--format har`), the form browsers'
//! developer tools and HTTP clients import.

use super::ConnView;
use crate::protocols::exchange::{Exchange, Fields, Message};
use base64::Engine;
use serde_json::{json, Value};

/// RFC 3339 UTC time with milliseconds (truncated) for realtime ns.
pub fn rfc3339(ts_ns: u64) -> String {
    // A u64 of ns ends in 2554, inside jiff's range (years -9999 to 9999).
    let ts = jiff::Timestamp::from_nanosecond(i128::from(ts_ns)).expect("u64 nanoseconds are in range");
    format!("{ts:.3}")
}

fn fields(f: &Fields) -> Value {
    f.iter().map(|(n, v)| json!({"name": n, "value": v})).collect()
}

fn headers(m: &Message) -> Value {
    fields(&m.head.headers)
}

/// What HAR has no field for, as custom (`_`) fields: trailers, and that
/// HTTP/2 headers could not all be decoded.
fn extras(m: &Message, into: &mut Value) {
    if !m.trailers.is_empty() {
        into["_trailers"] = fields(&m.trailers);
    }
    if m.head.headers_incomplete {
        into["_headersIncomplete"] = json!(true);
    }
}

fn mime(m: &Message) -> &str {
    m.head.header("content-type").unwrap_or("")
}

/// `text`, plus `encoding: base64` when the body is not UTF-8.
fn text(m: &Message) -> (String, Option<&'static str>) {
    match std::str::from_utf8(&m.body) {
        Ok(t) => (t.to_string(), None),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&m.body), Some("base64")),
    }
}

fn query(target: &str) -> Value {
    let Some((_, q)) = target.split_once('?') else { return json!([]) };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            json!({"name": n, "value": v})
        })
        .collect()
}

/// One HAR entry for an exchange seen by process `pid` on `conn`.
pub fn entry(e: &Exchange, started_ns: u64, pid: u32, comm: &str, conn: &ConnView) -> Value {
    let req = &e.request;
    let scheme = if conn.tls { "https" } else { "http" };
    let authority = match req.head.authority() {
        Some(h) => h.to_string(),
        None => conn.remote.to_string(),
    };
    let mut request = json!({
        "method": req.head.method,
        "url": format!("{scheme}://{authority}{}", req.head.target),
        "httpVersion": req.head.version.har(),
        "cookies": [],
        "headers": headers(req),
        "queryString": query(&req.head.target),
        "headersSize": -1,
        "bodySize": req.body.len(),
    });
    extras(req, &mut request);
    if !req.body.is_empty() {
        let (t, enc) = text(req);
        request["postData"] = json!({"mimeType": mime(req), "text": t});
        if let Some(enc) = enc {
            request["postData"]["_encoding"] = json!(enc);
        }
    }
    let latency_ms = e.latency_ns().map_or(-1.0, |ns| ns as f64 / 1e6);
    let response = match &e.response {
        Some(r) => {
            let (t, enc) = text(r);
            let mut content = json!({"size": r.body.len(), "mimeType": mime(r), "text": t});
            if let Some(enc) = enc {
                content["encoding"] = json!(enc);
            }
            let mut response = json!({
                "status": r.head.status,
                "statusText": r.head.reason,
                "httpVersion": r.head.version.har(),
                "cookies": [],
                "headers": headers(r),
                "content": content,
                "redirectURL": r.head.header("location").unwrap_or(""),
                "headersSize": -1,
                "bodySize": r.body.len(),
            });
            extras(r, &mut response);
            response
        }
        // HAR has no "no response": status 0 is what browsers write for aborted requests.
        None => json!({
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1, "bodySize": -1,
            "_error": "no response before the connection ended",
        }),
    };
    let mut entry = json!({
        "startedDateTime": rfc3339(started_ns),
        "time": latency_ms.max(0.0),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {"send": 0, "wait": latency_ms.max(0.0), "receive": 0},
        "serverIPAddress": conn.remote.ip().to_string(),
        "connection": conn.local.to_string(),
        "_pid": pid,
        "_comm": comm,
        "_role": conn.role.as_str(),
    });
    if let Some(reset) = e.reset_name() {
        entry["_reset"] = json!(reset);
    }
    if let Some(pod) = conn.k8s {
        entry["_k8s"] = serde_json::to_value(super::K8s(pod, conn.peer)).expect("k8s serialises");
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_586_074_118_280_366), "2026-11-25T05:54:34.118Z");
        assert_eq!(rfc3339(1_795_586_074_999_999_999), "2026-11-25T05:54:34.999Z", "truncated, not rounded");
        assert_eq!(rfc3339(4_102_444_799_000_000_000), "2099-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709Z");
    }
}

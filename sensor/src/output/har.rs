//! HAR 1.2 output (`--format har`): the exchanges as a file that browsers'
//! developer tools and HTTP clients import. Entries are streamed into the
//! `entries` array as exchanges complete, so memory stays bounded however
//! long the capture; `finish` closes the document.

use super::record::ConnView;
use crate::protocols::exchange::{Exchange, Message};
use base64::Engine;
use serde_json::{json, Value};
use std::io::{self, Write};

/// Writes one HAR document.
pub struct HarWriter<W: Write> {
    out: io::BufWriter<W>,
    entries: u64,
    finished: bool,
}

/// RFC 3339 UTC time with milliseconds for realtime ns.
pub fn rfc3339(ts_ns: u64) -> String {
    let secs = (ts_ns / 1_000_000_000) as i64;
    let ms = (ts_ns / 1_000_000) % 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

fn fields(f: &[(String, String)]) -> Value {
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
        entry["_k8s"] = serde_json::to_value(super::record::K8s(pod)).expect("k8s serialises");
    }
    entry
}

impl<W: Write> HarWriter<W> {
    /// Starts the document.
    pub fn new(out: W) -> io::Result<Self> {
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        let creator = json!({"name": "nettap", "version": env!("CARGO_PKG_VERSION")});
        write!(out, "{{\"log\":{{\"version\":\"1.2\",\"creator\":{creator},\"pages\":[],\"entries\":[")?;
        Ok(Self { out, entries: 0, finished: false })
    }

    /// Appends one entry.
    pub fn write(&mut self, entry: &Value) -> io::Result<()> {
        if self.entries > 0 {
            self.out.write_all(b",\n")?;
        } else {
            self.out.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut self.out, entry)?;
        self.entries += 1;
        Ok(())
    }

    /// Pushes buffered entries out (the document stays open).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Closes the document.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.out.write_all(b"\n]}}\n")?;
            self.finished = true;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Role;
    use crate::protocols::exchange::{Head, Version};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_586_074_118_280_366), "2026-11-25T05:54:34.118Z");
    }

    #[test]
    fn a_document_with_entries_parses() {
        let e = Exchange {
            reset: None,
            request: Message {
                head: Head {
                    method: "POST".into(),
                    target: "/a?x=1&y".into(),
                    version: Version::Http11,
                    headers: vec![
                        ("Host".into(), "h.test".into()),
                        ("Content-Type".into(), "text/plain".into()),
                    ],
                    ..Head::default()
                },
                body: b"hi".to_vec(),
                start_ts: 0,
                ..Message::default()
            },
            response: Some(Message {
                head: Head { status: 200, reason: "OK".into(), version: Version::Http11, ..Head::default() },
                body: vec![0xff],
                end_ts: 2_000_000,
                ..Message::default()
            }),
        };
        let conn = ConnView {
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:80".parse().unwrap(),
            role: Role::Client,
            tls: false,
            remote_host: None,
            k8s: None,
        };
        let mut buf = Vec::new();
        {
            let mut w = HarWriter::new(&mut buf).unwrap();
            w.write(&entry(&e, 1_000_000_000, 7, "curl", &conn)).unwrap();
            w.write(&entry(&Exchange { response: None, ..e.clone() }, 0, 7, "curl", &conn)).unwrap();
            w.finish().unwrap();
        }
        let v: Value = serde_json::from_slice(&buf).unwrap();
        let entries = v["log"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["request"]["url"], "http://h.test/a?x=1&y");
        assert_eq!(
            entries[0]["request"]["queryString"],
            json!([{"name": "x", "value": "1"}, {"name": "y", "value": ""}])
        );
        assert_eq!(entries[0]["request"]["postData"]["text"], "hi");
        assert_eq!(entries[0]["response"]["content"]["encoding"], "base64");
        assert_eq!(entries[0]["time"], 2.0);
        assert_eq!(entries[1]["response"]["status"], 0);
        assert!(entries[0].get("_k8s").is_none(), "no pod, no _k8s");
        let pod = crate::k8s::PodOf {
            meta: std::sync::Arc::new(crate::k8s::PodMeta {
                pod: "web-1".into(),
                namespace: "shop".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                workload: Some(crate::k8s::Workload { kind: "Deployment".into(), name: "web".into() }),
                uid: "u-1".into(),
            }),
            container: Some("app".into()),
        };
        let in_pod = ConnView { k8s: Some(&pod), ..conn };
        assert_eq!(
            entry(&e, 0, 7, "curl", &in_pod)["_k8s"],
            json!({"pod": "web-1", "namespace": "shop", "labels": {"app": "web"},
                   "workload": {"kind": "Deployment", "name": "web"}, "uid": "u-1", "container": "app"})
        );
        let empty: Value = {
            let mut b = Vec::new();
            HarWriter::new(&mut b).unwrap().finish().unwrap();
            serde_json::from_slice(&b).unwrap()
        };
        assert_eq!(empty["log"]["entries"], json!([]));
    }
}

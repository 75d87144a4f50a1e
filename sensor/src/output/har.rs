//! HAR 1.2 output (`--format har`): the exchanges as a file that browsers'
//! developer tools and HTTP clients import. Entries are streamed into the
//! `entries` array as exchanges complete, so memory stays bounded however
//! long the capture; `finish` closes the document.

use nettap_core::record::{har_entry, Body, Record};
use nettap_core::sink::Sink;
use serde_json::{json, Value};
use std::io::{self, Write};

/// Writes one HAR document.
pub struct HarWriter<W: Write> {
    out: io::BufWriter<W>,
    entries: u64,
    finished: bool,
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

impl<W: Write + Send> Sink for HarWriter<W> {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        match (r.body, r.conn) {
            (Body::Http(e), Some(conn)) => {
                self.write(&har_entry(e, r.origin.ts_ns, r.origin.pid, r.origin.comm, &conn))
            }
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        HarWriter::flush(self)
    }

    fn finish(&mut self) -> io::Result<()> {
        HarWriter::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettap_core::events::Role;
    use nettap_core::pod::{PodMeta, PodOf, Workload};
    use nettap_core::protocols::exchange::{Exchange, Head, Message, Version};
    use nettap_core::record::{har_entry as entry, ConnView};

    #[test]
    fn a_document_with_entries_parses() {
        let e = Exchange {
            reset: None,
            request: Box::new(Message {
                head: Head {
                    method: "POST".into(),
                    target: "/a?x=1&y".into(),
                    version: Version::Http11,
                    headers: nettap_core::protocols::exchange::Fields::from_iter([
                        ("Host", "h.test"),
                        ("Content-Type", "text/plain"),
                    ]),
                    ..Head::default()
                },
                body: b"hi".to_vec(),
                start_ts: 0,
                ..Message::default()
            }),
            response: Some(Box::new(Message {
                head: Head { status: 200, reason: "OK".into(), version: Version::Http11, ..Head::default() },
                body: vec![0xff],
                end_ts: 2_000_000,
                ..Message::default()
            })),
        };
        let conn = ConnView {
            id: 1,
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:80".parse().unwrap(),
            role: Role::Client,
            tls: false,
            remote_host: None,
            k8s: None,
            peer: None,
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
        let pod = PodOf {
            meta: std::sync::Arc::new(PodMeta {
                pod: "web-1".into(),
                namespace: "shop".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                workload: Some(Workload { kind: "Deployment".into(), name: "web".into() }),
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

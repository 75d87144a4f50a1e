//! The default output: one line per exchange as it completes (method, host,
//! path, status, latency, process), so a first run shows something at once;
//! connections that carried no HTTP get one line when they close.

use nettap_core::events::{ConnChange, Direction};
use nettap_core::protocols::db::DbExchange;
use nettap_core::protocols::exchange::Exchange;
use nettap_core::record::{Body, ConnView, DataKind, Origin, Record};
use nettap_core::sink::Sink;
use std::collections::HashMap;
use std::io::{self, Write};

#[derive(Debug, Default, Clone, Copy)]
struct Bytes {
    sent: u64,
    recv: u64,
    /// An exchange was shown: no closing line.
    http: bool,
}

/// Turns exchanges and connection ends into terminal lines.
pub struct TerminalSummary<W: Write> {
    out: W,
    bytes: HashMap<u64, Bytes>,
    max_conns: usize,
}

fn clock(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let ms = (ts_ns / 1_000_000) % 1000;
    format!("{:02}:{:02}:{:02}.{ms:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

impl<W: Write> TerminalSummary<W> {
    /// Writes lines to `out`; counts bytes of at most `max_conns` connections.
    pub fn new(out: W, max_conns: usize) -> Self {
        Self { out, bytes: HashMap::new(), max_conns }
    }

    fn conn(&mut self, conn_id: u64) -> Option<&mut Bytes> {
        if !self.bytes.contains_key(&conn_id) && self.bytes.len() >= self.max_conns {
            return None; // bounded: a flood of connections only loses summary lines
        }
        Some(self.bytes.entry(conn_id).or_default())
    }

    /// One line for an exchange; `ts_ns` is the request's realtime start.
    fn exchange(&mut self, o: &Origin<'_>, conn: &ConnView<'_>, e: &Exchange) -> io::Result<()> {
        if let Some(b) = self.conn(conn.id) {
            b.http = true;
        }
        let req = &e.request.head;
        let host = match req.authority() {
            Some(h) => h.to_string(),
            None => remote(conn),
        };
        let (status, latency) = match (&e.response, e.latency_ns()) {
            (Some(r), Some(ns)) => (r.head.status.to_string(), format!("{:.1} ms", ns as f64 / 1e6)),
            _ => match e.reset_name() {
                Some(reset) => ("-".to_string(), format!("reset {reset}")),
                None => ("-".to_string(), "no response".to_string()),
            },
        };
        writeln!(
            self.out,
            "{}  {:<7} {}://{}{}  {}  {}  {}[{}]",
            clock(o.ts_ns),
            req.method,
            if conn.tls { "https" } else { "http" },
            host,
            req.target,
            status,
            latency,
            o.comm,
            o.pid,
        )?;
        self.out.flush()
    }

    /// One line for a database or queue exchange: kind, what was asked, the answer.
    fn db(&mut self, o: &Origin<'_>, conn: &ConnView<'_>, e: &DbExchange) -> io::Result<()> {
        if let Some(b) = self.conn(conn.id) {
            b.http = true;
        }
        let (asked, answer) = e.summary();
        let latency = e.latency_ns().map(|ns| format!("{:.1} ms", ns as f64 / 1e6)).unwrap_or_default();
        writeln!(
            self.out,
            "{}  {:<7} {}  {}  -> {}  {}  {}[{}]",
            clock(o.ts_ns),
            e.kind().to_ascii_uppercase(),
            remote(conn),
            asked,
            answer,
            latency,
            o.comm,
            o.pid,
        )?;
        self.out.flush()
    }

    /// A connection ended; one line unless it carried HTTP (already shown).
    fn close(&mut self, o: &Origin<'_>, conn: &ConnView<'_>) -> io::Result<()> {
        let b = self.bytes.remove(&conn.id).unwrap_or_default();
        if b.http || (b.sent == 0 && b.recv == 0) {
            return Ok(());
        }
        writeln!(
            self.out,
            "{}  TCP     {} -> {} ({})  sent {}  recv {}  {}[{}]",
            clock(o.ts_ns),
            conn.local,
            remote(conn),
            conn.role.as_str(),
            size(b.sent),
            size(b.recv),
            o.comm,
            o.pid,
        )?;
        self.out.flush()
    }
}

impl<W: Write + Send> Sink for TerminalSummary<W> {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        let Some(conn) = &r.conn else { return Ok(()) };
        match r.body {
            Body::Data { kind: DataKind::Captured, direction, payload, .. } => {
                if let Some(b) = self.conn(conn.id) {
                    match direction {
                        Direction::Send => b.sent += payload.len() as u64,
                        Direction::Recv => b.recv += payload.len() as u64,
                    }
                }
                Ok(())
            }
            Body::Http(e) => self.exchange(&r.origin, conn, e),
            Body::Db(e) => self.db(&r.origin, conn, e),
            Body::Conn(ConnChange::Close) => self.close(&r.origin, conn),
            _ => Ok(()),
        }
    }
}

/// The remote endpoint, by the name the process looked up when there was one.
fn remote(conn: &ConnView<'_>) -> String {
    match conn.remote_host {
        Some(name) => format!("{name}:{} [{}]", conn.remote.port(), conn.remote.ip()),
        None => conn.remote.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettap_core::events::Role;
    use nettap_core::protocols::exchange::{Head, Message};

    fn conn(role: Role) -> ConnView<'static> {
        ConnView {
            id: 1,
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:8000".parse().unwrap(),
            role,
            tls: false,
            remote_host: None,
            k8s: None,
            peer: None,
        }
    }

    fn origin(ts_ns: u64) -> Origin<'static> {
        Origin { ts_ns, pid: 42, comm: "curl", source: "kernel", probe: "tracepoint:syscalls:sys_exit_read" }
    }

    fn data<'a>(conn: ConnView<'a>, direction: Direction, payload: &'a [u8]) -> Record<'a> {
        Record {
            origin: origin(0),
            conn: Some(conn),
            body: Body::Data { direction, seq: 0, payload, truncated: 0, kind: DataKind::Captured },
        }
    }

    fn close(conn: ConnView<'_>) -> Record<'_> {
        Record { origin: origin(0), conn: Some(conn), body: Body::Conn(ConnChange::Close) }
    }

    #[test]
    fn an_exchange_is_one_line() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        let e = Exchange {
            reset: None,
            request: Box::new(Message {
                head: Head {
                    method: "GET".into(),
                    target: "/x?y=1".into(),
                    headers: nettap_core::protocols::exchange::Fields::from_iter([("Host", "a.test")]),
                    ..Head::default()
                },
                start_ts: 1_000_000_000,
                ..Message::default()
            }),
            response: Some(Box::new(Message {
                head: Head { status: 404, ..Head::default() },
                end_ts: 1_002_500_000,
                ..Message::default()
            })),
        };
        let c = conn(Role::Client);
        t.record(&data(c, Direction::Send, b"GET /x?y=1 HTTP/1.1\r\n\r\n")).unwrap();
        t.record(&Record { origin: origin(1_000_000_000), conn: Some(c), body: Body::Http(&e) }).unwrap();
        t.record(&close(c)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("GET     http://a.test/x?y=1  404  2.5 ms  curl[42]"), "{text}");
    }

    #[test]
    fn other_tcp_is_one_line_at_close() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        let c = conn(Role::Server);
        t.record(&data(c, Direction::Recv, &[0; 2048])).unwrap();
        // The unparsed copy of the same bytes is not counted twice.
        let unparsed = Record {
            body: Body::Data {
                direction: Direction::Recv,
                seq: 0,
                payload: &[0; 2048],
                truncated: 0,
                kind: DataKind::Unparsed,
            },
            ..data(c, Direction::Recv, b"")
        };
        t.record(&unparsed).unwrap();
        t.record(&close(c)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("127.0.0.1:40000 -> 127.0.0.1:8000 (server)  sent 0 B  recv 2.0 KiB"),
            "{text}"
        );
    }

    #[test]
    fn connections_show_the_name_looked_up() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        let named = ConnView { remote_host: Some("api.example.test"), ..conn(Role::Client) };
        t.record(&data(named, Direction::Send, &[1; 10])).unwrap();
        t.record(&close(named)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("127.0.0.1:40000 -> api.example.test:8000 [127.0.0.1] (client)"), "{text}");
    }
}

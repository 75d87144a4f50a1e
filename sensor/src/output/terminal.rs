//! The default output: one line per exchange as it completes (method, host,
//! path, status, latency, process), so a first run shows something at once;
//! connections that carried no HTTP get one line when they close.

use crate::conn::ConnInfo;
use crate::events::{comm_str, Direction};
use crate::protocols::exchange::Exchange;
use std::collections::HashMap;
use std::io::{self, Write};

#[derive(Debug, Default, Clone, Copy)]
struct Bytes {
    sent: u64,
    recv: u64,
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

    /// Counts a chunk's bytes for the connection's closing line.
    pub fn on_data(&mut self, conn_id: u64, dir: Direction, len: usize) {
        if !self.bytes.contains_key(&conn_id) && self.bytes.len() >= self.max_conns {
            return; // bounded: a flood of connections only loses summary lines
        }
        let b = self.bytes.entry(conn_id).or_default();
        match dir {
            Direction::Send => b.sent += len as u64,
            Direction::Recv => b.recv += len as u64,
        }
    }

    /// One line for an exchange; `ts_ns` is the request's realtime start.
    pub fn on_exchange(&mut self, info: &ConnInfo, e: &Exchange, ts_ns: u64) -> io::Result<()> {
        let req = &e.request.head;
        let host = match req.authority() {
            Some(h) => h.to_string(),
            None => remote(info),
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
            clock(ts_ns),
            req.method,
            if info.tls { "https" } else { "http" },
            host,
            req.target,
            status,
            latency,
            comm_str(&info.comm),
            info.pid,
        )?;
        self.out.flush()
    }

    /// A connection ended; one line unless it carried HTTP (already shown).
    pub fn on_close(&mut self, conn_id: u64, info: &ConnInfo, ts_ns: u64, was_http: bool) -> io::Result<()> {
        let b = self.bytes.remove(&conn_id).unwrap_or_default();
        if was_http || (b.sent == 0 && b.recv == 0) {
            return Ok(());
        }
        writeln!(
            self.out,
            "{}  TCP     {} -> {} ({})  sent {}  recv {}  {}[{}]",
            clock(ts_ns),
            info.local,
            remote(info),
            info.role.as_str(),
            size(b.sent),
            size(b.recv),
            comm_str(&info.comm),
            info.pid,
        )?;
        self.out.flush()
    }
}

/// The remote endpoint, by the name the process looked up when there was one.
fn remote(info: &ConnInfo) -> String {
    match &info.remote_host {
        Some(name) => format!("{name}:{} [{}]", info.remote.port(), info.remote.ip()),
        None => info.remote.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Role;
    use crate::protocols::exchange::{Head, Message};

    fn info(role: Role) -> ConnInfo {
        ConnInfo {
            pid: 42,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:8000".parse().unwrap(),
            role,
            midstream: false,
            tls: false,
            remote_host: None,
            pod: None,
        }
    }

    #[test]
    fn an_exchange_is_one_line() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        let e = Exchange {
            reset: None,
            request: Message {
                head: Head {
                    method: "GET".into(),
                    target: "/x?y=1".into(),
                    headers: vec![("Host".into(), "a.test".into())],
                    ..Head::default()
                },
                start_ts: 1_000_000_000,
                ..Message::default()
            },
            response: Some(Message {
                head: Head { status: 404, ..Head::default() },
                end_ts: 1_002_500_000,
                ..Message::default()
            }),
        };
        t.on_exchange(&info(Role::Client), &e, 1_000_000_000).unwrap();
        t.on_close(1, &info(Role::Client), 0, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("GET     http://a.test/x?y=1  404  2.5 ms  curl[42]"), "{text}");
    }

    #[test]
    fn other_tcp_is_one_line_at_close() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        t.on_data(1, Direction::Recv, 2048);
        t.on_close(1, &info(Role::Server), 0, false).unwrap();
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
        let named = ConnInfo { remote_host: Some("api.example.test".into()), ..info(Role::Client) };
        t.on_data(1, Direction::Send, 10);
        t.on_close(1, &named, 0, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("127.0.0.1:40000 -> api.example.test:8000 [127.0.0.1] (client)"), "{text}");
    }
}

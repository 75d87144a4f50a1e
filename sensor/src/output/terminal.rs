//! The default output: one line per exchange as it completes (method, host,
//! path, status, latency, process), so a first run shows something at once.
//! HTTP/1.x is recognised from the first bytes of each message; other
//! connections get one line when they close. The protocol layer proper
//! (exact HTTP parsing, HTTP/2) replaces this recogniser when it lands.

use crate::conn::ConnInfo;
use crate::events::{comm_str, Direction, Role};
use std::collections::HashMap;
use std::io::{self, Write};

#[derive(Debug, Default)]
struct Pending {
    method: String,
    target: String,
    host: String,
    ts_ns: u64,
}

#[derive(Debug, Default)]
struct ConnSummary {
    http: bool,
    pending: Option<Pending>,
    sent: u64,
    recv: u64,
}

/// Turns records into terminal lines.
pub struct TerminalSummary<W: Write> {
    out: W,
    conns: HashMap<u64, ConnSummary>,
    max_conns: usize,
}

fn request_direction(role: Role) -> Option<Direction> {
    match role {
        Role::Client => Some(Direction::Send),
        Role::Server => Some(Direction::Recv),
        Role::Unknown => None,
    }
}

fn clock(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let ms = (ts_ns / 1_000_000) % 1000;
    format!("{:02}:{:02}:{:02}.{ms:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

impl<W: Write> TerminalSummary<W> {
    /// Writes lines to `out`; remembers at most `max_conns` connections.
    pub fn new(out: W, max_conns: usize) -> Self {
        Self { out, conns: HashMap::new(), max_conns }
    }

    /// Feeds one chunk.
    pub fn on_data(
        &mut self,
        conn_id: u64,
        info: &ConnInfo,
        dir: Direction,
        ts_ns: u64,
        payload: &[u8],
    ) -> io::Result<()> {
        if !self.conns.contains_key(&conn_id) && self.conns.len() >= self.max_conns {
            return Ok(()); // bounded: a flood of connections only loses summary lines
        }
        let c = self.conns.entry(conn_id).or_default();
        match dir {
            Direction::Send => c.sent += payload.len() as u64,
            Direction::Recv => c.recv += payload.len() as u64,
        }
        let is_request_side = request_direction(info.role).is_none_or(|d| d == dir);
        if is_request_side {
            if let Some(p) = parse_request(payload, ts_ns) {
                c.http = true;
                c.pending = Some(p);
                return Ok(());
            }
        }
        if let (Some(status), Some(p)) = (parse_status(payload), c.pending.as_ref()) {
            let latency_ms = ts_ns.saturating_sub(p.ts_ns) as f64 / 1e6;
            writeln!(
                self.out,
                "{}  {:<7} http://{}{}  {}  {:.1} ms  {}[{}]",
                clock(p.ts_ns),
                p.method,
                if p.host.is_empty() { info.remote.to_string() } else { p.host.clone() },
                p.target,
                status,
                latency_ms,
                comm_str(&info.comm),
                info.pid,
            )?;
            c.pending = None;
            self.out.flush()?;
        }
        Ok(())
    }

    /// A connection ended: non-HTTP connections get their one line now.
    pub fn on_close(&mut self, conn_id: u64, info: &ConnInfo, ts_ns: u64) -> io::Result<()> {
        let Some(c) = self.conns.remove(&conn_id) else {
            return Ok(());
        };
        if c.http || (c.sent == 0 && c.recv == 0) {
            return Ok(());
        }
        writeln!(
            self.out,
            "{}  TCP     {} -> {} ({})  sent {}  recv {}  {}[{}]",
            clock(ts_ns),
            info.local,
            info.remote,
            info.role.as_str(),
            bytes(c.sent),
            bytes(c.recv),
            comm_str(&info.comm),
            info.pid,
        )?;
        self.out.flush()
    }
}

fn parse_request(payload: &[u8], ts_ns: u64) -> Option<Pending> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    // Partial is fine: the request line is enough, headers are a bonus.
    let _ = req.parse(payload);
    let (method, target) = (req.method?, req.path?);
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or("");
    Some(Pending { method: method.into(), target: target.into(), host: host.into(), ts_ns })
}

fn parse_status(payload: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut resp = httparse::Response::new(&mut headers);
    let _ = resp.parse(payload);
    resp.code.filter(|_| payload.starts_with(b"HTTP/1."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(role: Role) -> ConnInfo {
        ConnInfo {
            pid: 42,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:8000".parse().unwrap(),
            role,
        }
    }

    #[test]
    fn an_http_exchange_is_one_line() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        let i = info(Role::Client);
        t.on_data(1, &i, Direction::Send, 1_000_000_000, b"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        t.on_data(1, &i, Direction::Recv, 1_002_500_000, b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
        t.on_close(1, &i, 1_003_000_000).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("GET     http://a.test/x?y=1  404  2.5 ms  curl[42]"), "{text}");
    }

    #[test]
    fn other_tcp_is_one_line_at_close() {
        let mut out = Vec::new();
        let mut t = TerminalSummary::new(&mut out, 16);
        let i = info(Role::Server);
        t.on_data(1, &i, Direction::Recv, 0, &[0u8; 2048]).unwrap();
        t.on_close(1, &i, 0).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("127.0.0.1:40000 -> 127.0.0.1:8000 (server)  sent 0 B  recv 2.0 KiB"),
            "{text}"
        );
    }
}

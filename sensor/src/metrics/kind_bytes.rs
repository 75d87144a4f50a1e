//! Captured payload bytes by the kind of record they became: a connection's
//! bytes wait (a count per connection, no payload) until its first exchange
//! names its kind (`http`, `pgsql`, …), and count as `data` when it closes
//! without one. The socket's bytes of a TLS connection after its plaintext
//! started are not counted (the plaintext is, as the parsers see it).

use nettap_core::events::ConnChange;
use nettap_core::record::{Body, DataKind, Record};

/// Connections followed at once; when more are open, every waiting count
/// is written as `data` and the table starts again (a lost close can leave
/// entries behind: this bounds them).
const MAX_CONNS: usize = 65_536;

#[derive(Debug, Default)]
struct Conn {
    /// The kind its exchanges have, once one came.
    kind: Option<&'static str>,
    /// Bytes waiting for the kind.
    waiting: u64,
    /// A TLS library's plaintext came: the socket's bytes are ciphertext.
    plaintext: bool,
}

/// Counts bytes into `count(kind, bytes)`.
#[derive(Debug, Default)]
pub(super) struct KindBytes {
    /// Looked up for every data record: foldhash, as the other tables keyed
    /// by connection id.
    conns: foldhash::HashMap<u64, Conn>,
}

impl KindBytes {
    pub(super) fn record(&mut self, r: &Record<'_>, count: &mut impl FnMut(&'static str, u64)) {
        let Some(c) = r.conn else { return };
        let kind = match r.body {
            Body::Data { payload, kind: DataKind::Captured, .. } => {
                let plaintext = r.origin.source != "kernel";
                if !self.conns.contains_key(&c.id) && self.conns.len() >= MAX_CONNS {
                    for (_, old) in self.conns.drain() {
                        count("data", old.waiting);
                    }
                }
                let conn = self.conns.entry(c.id).or_default();
                conn.plaintext |= plaintext;
                let bytes = payload.len() as u64;
                match conn.kind {
                    _ if conn.plaintext && !plaintext => {}
                    Some(kind) => count(kind, bytes),
                    None => conn.waiting += bytes,
                }
                return;
            }
            Body::Conn(ConnChange::Close | ConnChange::CloseUntracked) => {
                if let Some(conn) = self.conns.remove(&c.id) {
                    count(conn.kind.unwrap_or("data"), conn.waiting);
                }
                return;
            }
            Body::Http(_) | Body::Db(_) | Body::Dns(..) => r.kind(),
            _ => return,
        };
        if let Some(conn) = self.conns.get_mut(&c.id) {
            if conn.kind.is_none() {
                conn.kind = Some(kind);
                count(kind, std::mem::take(&mut conn.waiting));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettap_core::events::{Direction, Role};
    use nettap_core::protocols::exchange::Exchange;
    use nettap_core::record::{ConnView, Origin};

    fn record<'a>(id: u64, source: &'static str, body: Body<'a>) -> Record<'a> {
        let conn = ConnView {
            id,
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            role: Role::Client,
            tls: false,
            remote_host: None,
            k8s: None,
            peer: None,
        };
        Record { origin: Origin { ts_ns: 0, pid: 1, comm: "t", source, probe: "p" }, conn: Some(conn), body }
    }

    fn data(payload: &[u8]) -> Body<'_> {
        Body::Data { direction: Direction::Send, seq: 0, payload, truncated: 0, kind: DataKind::Captured }
    }

    #[test]
    fn bytes_wait_for_their_connections_kind_and_ciphertext_after_plaintext_is_not_counted() {
        let exchange: Exchange = Exchange::default();
        let mut k = KindBytes::default();
        let mut got: Vec<(&'static str, u64)> = Vec::new();
        let mut count = |kind, bytes| got.push((kind, bytes));
        // Connection 1: 5 bytes, an exchange, 3 more.
        k.record(&record(1, "kernel", data(b"hello")), &mut count);
        k.record(&record(1, "kernel", Body::Http(&exchange)), &mut count);
        k.record(&record(1, "kernel", data(b"abc")), &mut count);
        // Connection 2: TLS, 4 bytes of handshake, then plaintext (2), ciphertext (6) not counted.
        k.record(&record(2, "kernel", data(b"\x16\x03\x01\x00")), &mut count);
        k.record(&record(2, "openssl", data(b"hi")), &mut count);
        k.record(&record(2, "kernel", data(b"\x17\x03\x03\x00\x01x")), &mut count);
        k.record(&record(2, "openssl", Body::Http(&exchange)), &mut count);
        // Connection 3: no exchange before its close.
        k.record(&record(3, "kernel", data(b"zz")), &mut count);
        k.record(&record(3, "kernel", Body::Conn(ConnChange::Close)), &mut count);
        k.record(&record(1, "kernel", Body::Conn(ConnChange::Close)), &mut count);
        assert_eq!(got, [("http", 5), ("http", 3), ("http", 6), ("data", 2), ("http", 0)]);
        assert_eq!(k.conns.len(), 1);
    }
}

//! DNS over TCP: each direction of a connection to or from port 53 is a
//! series of length-framed messages, read while its bytes arrive in order;
//! a gap or truncation ends that direction's reading.

use crate::dns::TcpDnsFramer;
use crate::events::DataEvent;

/// One direction of a DNS-over-TCP connection.
#[derive(Debug, Default)]
struct Direction {
    framer: TcpDnsFramer,
    next_seq: Option<u64>,
    lost: bool,
}

/// The DNS-over-TCP connections being read, by connection id: (send, recv).
#[derive(Debug, Default)]
pub(super) struct TcpDnsStreams {
    conns: foldhash::HashMap<u64, [Direction; 2]>,
}

impl TcpDnsStreams {
    /// Feeds one chunk; `message` gets each whole DNS message. At most `max`
    /// connections are read at once (a rare protocol: later ones are not).
    pub(super) fn feed(&mut self, d: &DataEvent<'_>, max: usize, message: &mut impl FnMut(&[u8])) {
        let id = d.header.conn.id;
        if self.conns.len() >= max && !self.conns.contains_key(&id) {
            return;
        }
        let dir = &mut self.conns.entry(id).or_default()[d.direction as usize];
        if dir.lost || dir.next_seq.is_some_and(|s| s != d.seq) || d.truncated > 0 {
            dir.lost = true;
            dir.framer.gap();
            return;
        }
        dir.next_seq = Some(d.seq + d.payload.len() as u64);
        dir.framer.feed(d.payload, message);
    }

    /// Forgets a connection that ended.
    pub(super) fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

//! DNS over TCP (port 53), sans IO: one direction's bytes in, whole
//! messages out. Each message is preceded by its length in two bytes
//! (RFC 1035 4.2.2), so at most 64 KiB is ever held.

/// Reassembles one direction of a DNS-over-TCP connection.
#[derive(Debug, Default)]
pub struct TcpDnsFramer {
    buf: Vec<u8>,
}

impl TcpDnsFramer {
    /// A framer at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `out` with each message completed by them.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            let need = match self.buf.len() {
                n @ (0 | 1) => 2 - n,
                n => 2 + usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])) - n,
            };
            let take = need.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
                if self.buf.len() == 2 + len {
                    out(&self.buf[2..]);
                    self.buf.clear();
                }
            }
        }
    }

    /// Bytes went missing: the next message start is unknown, so this
    /// direction is not read any further.
    pub fn gap(&mut self) {
        self.buf.clear();
        self.buf.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        msgs.iter().flat_map(|m| [&(m.len() as u16).to_be_bytes()[..], m].concat()).collect()
    }

    #[test]
    fn any_split_gives_the_same_messages() {
        let stream = framed(&[b"first", b"", b"the second message", &[7u8; 300]]);
        let want: Vec<Vec<u8>> =
            vec![b"first".to_vec(), vec![], b"the second message".to_vec(), vec![7; 300]];
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut f = TcpDnsFramer::new();
                let mut got = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    f.feed(part, &mut |m| got.push(m.to_vec()));
                }
                assert_eq!(got, want, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn memory_is_bounded_by_one_message() {
        let mut f = TcpDnsFramer::new();
        f.feed(&[0xff, 0xff], &mut |_| panic!("not complete"));
        let mut sizes = Vec::new();
        f.feed(&vec![0u8; 70_000], &mut |m| sizes.push(m.len()));
        // One full message, then zero bytes read as empty messages.
        assert_eq!(sizes[0], 65_535);
        assert!(sizes[1..].iter().all(|&n| n == 0));
        assert!(f.buf.capacity() <= 65_537 * 2);
    }
}

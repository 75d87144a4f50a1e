//! Finding packet boundaries on a connection joined mid-stream. A MySQL
//! packet is a 3-byte length and a sequence id: a command is packet 0 of
//! its exchange and the answer's packets count on from 1, so a chunk (one
//! write) is taken for a command when it is one packet 0 filling it with a
//! command that has an answer, and a server's chunk for an answer's start
//! when its packets count 1, 2, … through it and the first is how answers
//! begin.

/// Packets longer than this are not taken for a boundary.
const MAX_PLAUSIBLE: usize = 16 << 20;

/// The 3-byte length and sequence id at the start of `bytes`.
fn header(bytes: &[u8]) -> Option<(usize, u8)> {
    let h = bytes.get(..4)?;
    Some((usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16, h[3]))
}

/// Whether `text` (possibly cut short) reads as SQL or a schema name: UTF-8
/// without control characters other than tabs and line ends.
fn texty(text: &[u8]) -> bool {
    let utf8 = match std::str::from_utf8(text) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    !text.is_empty() && utf8 && text.iter().all(|&b| b >= 0x20 || b"\t\n\r".contains(&b))
}

/// Whether a client's `chunk` is a command that gets an answer: one packet
/// 0 (a query's may go on past the chunk's end) holding COM_QUERY,
/// COM_STMT_PREPARE or COM_INIT_DB with text, COM_PING, or a
/// COM_STMT_EXECUTE of one iteration.
pub fn request_start(chunk: &[u8]) -> bool {
    let Some((len, 0)) = header(chunk) else { return false };
    if !(1..=MAX_PLAUSIBLE).contains(&len) || chunk.len() < 5 {
        return false;
    }
    let body = &chunk[4..chunk.len().min(4 + len)];
    let whole = body.len() == len;
    if whole && chunk.len() != 4 + len {
        return false; // a command is written alone
    }
    match body[0] {
        0x03 | 0x16 => texty(&body[1..]),
        0x02 => whole && texty(&body[1..]),
        0x0e => len == 1,
        // Statement id, flags (cursor types up to 8), iteration count 1.
        0x17 => whole && len >= 10 && body[5] <= 0x0f && body[6..10] == [1, 0, 0, 0],
        _ => false,
    }
}

/// Whether a server's `chunk` starts an answer: packets numbered from 1
/// on, each after the other, the first an OK, an ERR, a LOCAL INFILE
/// request or a result set's column count (or a chunk of packet 1's
/// header alone). Clients do not pipeline commands, so a packet 1 read
/// while a command waits is its answer's.
pub fn answer_start(chunk: &[u8]) -> bool {
    let Some((first_len, 1)) = header(chunk) else { return false };
    let Some(&first) = chunk.get(4) else {
        // A reader that takes each header alone (mysql-connector-python
        // reads 4 bytes, then the payload): the number has to do.
        return (1..=MAX_PLAUSIBLE).contains(&first_len);
    };
    let opening = match first {
        0x00 => first_len >= 7,
        0xff => first_len >= 3,
        0xfb => first_len >= 1,
        // A column count: one length-encoded byte (and MySQL 8's
        // metadata-follows flag).
        1..=0xfa => first_len <= 2,
        _ => false,
    };
    if !opening {
        return false;
    }
    let (mut rest, mut seq) = (chunk, 1u8);
    while let Some((len, s)) = header(rest) {
        if s != seq || len > MAX_PLAUSIBLE {
            return false;
        }
        rest = rest.get(4 + len..).unwrap_or_default();
        seq = seq.wrapping_add(1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::session::tests::packet;
    use super::*;

    #[test]
    fn a_command_is_found_and_other_bytes_are_not() {
        let q = packet(0, b"\x03SELECT 1");
        assert!(request_start(&q));
        assert!(request_start(&q[..8]), "a long query cut at the chunk's end");
        assert!(!request_start(&q[..4]));
        assert!(request_start(&packet(0, b"\x0e")));
        assert!(request_start(&packet(0, &[0x17, 5, 0, 0, 0, 0, 1, 0, 0, 0])));
        assert!(!request_start(&packet(1, b"\x03SELECT 1")), "not packet 0");
        assert!(!request_start(&packet(0, b"\x03SEL\x01CT")), "not text");
        assert!(!request_start(&[q.clone(), q.clone()].concat()), "two packets");
        assert!(!request_start(&packet(0, b"\x19\x05\0\0\0")), "COM_STMT_CLOSE gets no answer");
        assert!(!request_start(b"GET / HTTP/1.1\r\n"));
        for cut in 1..q.len() {
            assert!(!request_start(&q[cut..]), "cut {cut}");
        }
    }

    #[test]
    fn an_answer_start_counts_its_packets_from_one() {
        let mut rows = packet(1, &[1]);
        rows.extend(packet(2, b"\x03def\x04shop\x01t\x01t\x01a\x01a\x0c\x21\0\x0b\0\0\0\x03\0\0\0\0\0"));
        rows.extend(packet(3, &[0xfe, 0, 0, 2, 0]));
        rows.extend(packet(4, &[1, b'7']));
        rows.extend(packet(5, &[0xfe, 0, 0, 2, 0]));
        assert!(answer_start(&rows));
        assert!(answer_start(&rows[..20]), "cut short");
        assert!(answer_start(&rows[..4]), "a header read alone");
        assert!(!answer_start(&rows[..3]));
        assert!(answer_start(&packet(1, &[0, 1, 0, 2, 0, 0, 0])), "OK");
        assert!(answer_start(&packet(1, b"\xff\x7a\x04#42S02nope")), "ERR");
        // The rest of an earlier answer: its packets do not count from 1.
        for cut in 1..rows.len() {
            assert!(!answer_start(&rows[cut..]), "cut {cut}");
        }
        assert!(!answer_start(&packet(1, b"\x03def")), "a column definition does not open an answer");
    }
}

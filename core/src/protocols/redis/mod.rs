//! Redis: RESP2 and RESP3 values ([`resp`]) and the pairing of commands
//! with replies ([`session`]). A connection is Redis when its first bytes
//! are a command: an array of bulk strings whose first is a word.

pub mod resp;
pub mod session;

pub use resp::{Agg, Blob, Value};
pub use session::{Command, RedisExchange, RedisSession, Reply, Request};

/// Whether `first` (a connection's first bytes from its client) is a Redis
/// command: `Some(true)` yes, `Some(false)` no, `None` too few bytes.
pub fn classify(first: &[u8]) -> Option<bool> {
    let mut rest = first;
    // `*<items>\r\n$<len>\r\n<name>`: a count, a length, then letters.
    let Some(items) = decimal_line(&mut rest, b'*')? else { return Some(false) };
    if !(1..=1 << 20).contains(&items) {
        return Some(false);
    }
    let Some(len) = decimal_line(&mut rest, b'$')? else { return Some(false) };
    if !(1..=64).contains(&len) {
        return Some(false);
    }
    let name = &rest[..rest.len().min(len as usize)];
    if !name.iter().all(|b| b.is_ascii_alphabetic() || *b == b'_' || *b == b'.' || *b == b'|') {
        return Some(false);
    }
    if name.len() < len as usize {
        return None;
    }
    Some(true)
}

/// Reads `<tag><digits>\r\n` off the front of `rest`: `None` when more
/// bytes are needed, `Some(None)` when it is not that.
fn decimal_line(rest: &mut &[u8], tag: u8) -> Option<Option<u64>> {
    let (&first, tail) = rest.split_first()?;
    if first != tag {
        return Some(None);
    }
    let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 8 {
        return Some(None);
    }
    match tail.get(digits..digits + 2) {
        None if tail[digits..].iter().zip(b"\r\n").all(|(a, b)| a == b) => None,
        Some(b"\r\n") if digits > 0 => {
            let n = std::str::from_utf8(&tail[..digits]).ok()?.parse().ok()?;
            *rest = &tail[digits + 2..];
            Some(Some(n))
        }
        _ => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_from_their_first_bytes() {
        let cmd = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(classify(cmd), Some(true));
        for n in 1..11 {
            assert_eq!(classify(&cmd[..n]), None, "{n} bytes");
        }
        assert_eq!(classify(&cmd[..11]), Some(true));
        assert_eq!(classify(b"*1\r\n$12\r\nCLIENT|LIST\x00"), Some(false));
        assert_eq!(classify(b"*0\r\n"), Some(false));
        assert_eq!(classify(b"*2\r\n:1\r\n"), Some(false));
        assert_eq!(classify(b"*2x"), Some(false));
        assert_eq!(classify(b"+OK\r\n"), Some(false));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(classify(b"*1\r\n$4\r\n\x00\x01\x02\x03"), Some(false));
    }
}

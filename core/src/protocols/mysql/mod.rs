//! MySQL and MariaDB (client/server protocol 10): packets ([`packet`]),
//! binary values ([`values`]) and the pairing of commands with answers
//! ([`session`]). The server speaks first: a connection is MySQL when its
//! first bytes from the server are a protocol-10 greeting.

pub mod packet;
pub mod resync;
pub mod session;
pub mod values;

pub use session::{MyExchange, MyRequest, MyResponse, MySession};
pub use values::MyError;

/// Whether `first` (a connection's first bytes from its server) is a
/// protocol-10 greeting: `Some(true)` yes, `Some(false)` no, `None` too few bytes.
pub fn classify(first: &[u8]) -> Option<bool> {
    // 3-byte length, sequence 0, protocol 10, a printable version, NUL.
    // A length of at most 1024: its second byte is at most 4, its third 0.
    if first.get(1).is_some_and(|&b| b > 4) || first.get(2).is_some_and(|&b| b != 0) {
        return Some(false);
    }
    let head = [first.get(3).copied(), first.get(4).copied()];
    if head[0].is_some_and(|s| s != 0) || head[1].is_some_and(|p| p != 10) {
        return Some(false);
    }
    if first.len() >= 3 {
        let len = usize::from(first[0]) | usize::from(first[1]) << 8 | usize::from(first[2]) << 16;
        if !(30..=1024).contains(&len) {
            return Some(false);
        }
    }
    let version = first.get(5..).unwrap_or_default();
    match version.iter().position(|&b| b == 0) {
        Some(0) => Some(false),
        Some(end) => Some(version[..end].iter().all(|b| b.is_ascii_graphic())),
        None if version.len() > 64 || !version.iter().all(|b| b.is_ascii_graphic()) => Some(false),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_are_recognised_from_their_first_bytes() {
        let g = b"\x5b\0\0\0\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\0\x03\0\0\0";
        assert_eq!(classify(g), Some(true));
        assert_eq!(classify(&g[..12]), None);
        assert_eq!(classify(b"\x5b\0\0\x01\x0a5.5"), Some(false));
        assert_eq!(classify(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(classify(b"\x5b\0\0\0\x0a\0"), Some(false));
        assert_eq!(classify(b"\x05\0\0\0\x0a8.0\0"), Some(false), "too short for a greeting");
    }
}

//! PostgreSQL (frontend/backend protocol v3): framing ([`framer`]), values
//! ([`values`]) and the pairing of requests with answers ([`session`]). A
//! connection is PostgreSQL when its client's first message is a startup,
//! SSLRequest, GSSENCRequest or CancelRequest: a length and a code that
//! nothing else starts with.

pub mod framer;
pub mod resync;
pub mod session;
pub mod values;

pub use session::{PgExchange, PgRequest, PgResponse, PgSession};
pub use values::{Cell, PgError};

/// Whether `first` (a connection's first bytes from its client) is a
/// PostgreSQL opening: `Some(true)` yes, `Some(false)` no, `None` too few bytes.
pub fn classify(first: &[u8]) -> Option<bool> {
    if first.len() < 8 {
        // Lengths start with zero bytes; anything else is not ours.
        return if first.iter().take(2).all(|&b| b == 0) { None } else { Some(false) };
    }
    let len = u32::from_be_bytes(first[..4].try_into().expect("4 bytes"));
    let code = u32::from_be_bytes(first[4..8].try_into().expect("4 bytes"));
    Some(match code {
        // Startup v3.x: parameters, a few hundred bytes at most in practice.
        0x0003_0000..=0x0003_00ff => (9..=10_000).contains(&len),
        80_877_103 | 80_877_104 => len == 8,
        80_877_102 => len == 16,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_are_recognised_from_their_first_bytes() {
        assert_eq!(classify(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]), Some(true), "SSLRequest");
        assert_eq!(classify(&[0, 0, 0, 0x29, 0, 3, 0, 0, b'u']), Some(true), "startup");
        assert_eq!(classify(&[0, 0, 0, 0x10, 4, 0xd2, 0x16, 0x2e]), Some(true), "cancel");
        assert_eq!(classify(&[0, 0, 0]), None);
        assert_eq!(classify(&[0, 0, 0, 9, 0, 2, 0, 0]), Some(false), "protocol 2 is not decoded");
        assert_eq!(classify(b"GET / HT"), Some(false));
        assert_eq!(classify(&[0, 0, 0, 0x20, 4, 0xd2, 0x16, 0x2f]), Some(false));
    }
}

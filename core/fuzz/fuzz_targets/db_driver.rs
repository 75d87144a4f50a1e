//! The loop the database sessions' fuzz targets share: arbitrary bytes cut
//! into pieces and fed to both directions of a session: no panic, memory
//! within the parser's budgets, and raw ranges within their chunk.

use nettap_core::protocols::db::{DbOutput, DbSession};
use nettap_core::protocols::exchange::Limits;

/// The budgets every target's session gets.
pub const LIMITS: Limits = Limits { max_head: 1024, max_body: 4096 };

/// Feeds `data` to `s`. Each byte of a 16-byte prefix picks a piece length
/// and a direction (0x7f also loses `gap` bytes of that direction). When the
/// prefix's first byte is even, `prelude` (direction, bytes) goes first: a
/// handshake that takes the session to its typed messages.
pub fn drive(mut s: DbSession, data: &[u8], gap: u64, prelude: &[(bool, &[u8])]) {
    let mut out = Vec::new();
    let (plan, mut bytes) = data.split_at(data.len().min(16));
    if plan.is_empty() {
        return;
    }
    if plan[0] & 1 == 0 {
        for (request, piece) in prelude {
            s.feed(*request, piece, 0, &mut out);
        }
        out.clear();
    }
    for (i, &p) in plan.iter().cycle().enumerate().take(4096) {
        if bytes.is_empty() {
            break;
        }
        let n = (p as usize % 64 + 1).min(bytes.len());
        let request = p & 0x80 == 0;
        s.feed(request, &bytes[..n], i as u64, &mut out);
        for o in &out {
            if let DbOutput::Raw(r) = o {
                assert!(r.start <= r.end && r.end <= n);
            }
        }
        if p == 0x7f {
            s.gap(request, gap, i as u64, &mut out);
        }
        bytes = &bytes[n..];
        out.clear();
    }
    s.close(u64::MAX, &mut out);
}

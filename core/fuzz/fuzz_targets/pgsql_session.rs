//! Arbitrary bytes, cut into pieces and fed to both directions of a
//! PostgreSQL session (after a valid startup, so the typed messages are
//! reached): no panic, memory within the bounds, raw ranges within the chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbOutput;
use nettap_core::protocols::exchange::Limits;
use nettap_core::protocols::pgsql::PgSession;

const STARTUP: &[u8] = b"\0\0\0\x1d\0\x03\0\0user\0u\0database\0d\0\0";

fuzz_target!(|data: &[u8]| {
    let mut s = PgSession::new(Limits { max_head: 1024, max_body: 4096 });
    let mut out = Vec::new();
    let (plan, mut bytes) = data.split_at(data.len().min(16));
    if plan.is_empty() {
        return;
    }
    if plan[0] & 1 == 0 {
        s.feed(true, STARTUP, 0, &mut out);
    }
    for (i, &p) in plan.iter().cycle().enumerate().take(4096) {
        if bytes.is_empty() {
            break;
        }
        let n = (p as usize % 64 + 1).min(bytes.len());
        let frontend = p & 0x80 == 0;
        s.feed(frontend, &bytes[..n], i as u64, &mut out);
        for o in &out {
            if let DbOutput::Raw(r) = o {
                assert!(r.start <= r.end && r.end <= n);
            }
        }
        if p == 0x7f {
            s.gap(frontend, 3, i as u64, &mut out);
        }
        bytes = &bytes[n..];
        out.clear();
    }
    s.close(u64::MAX, &mut out);
});

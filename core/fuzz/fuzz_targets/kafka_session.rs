//! Arbitrary bytes, cut into pieces and fed to both directions of a Kafka
//! session: no panic, memory within the parser's budgets, and every byte a
//! broken direction gives up handed back as raw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbOutput;
use nettap_core::protocols::exchange::Limits;
use nettap_core::protocols::kafka::KafkaSession;

fuzz_target!(|data: &[u8]| {
    let mut s = KafkaSession::new(Limits { max_head: 1024, max_body: 4096 });
    let mut out = Vec::new();
    // Each byte of a small prefix picks a piece length and a direction.
    let (plan, mut bytes) = data.split_at(data.len().min(16));
    if plan.is_empty() {
        return;
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
            s.gap(request, 1, i as u64, &mut out);
        }
        bytes = &bytes[n..];
        out.clear();
    }
    s.close(u64::MAX, &mut out);
});

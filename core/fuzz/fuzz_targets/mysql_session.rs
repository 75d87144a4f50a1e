//! Arbitrary bytes, cut into pieces and fed to both directions of a MySQL
//! session (after a greeting and a handshake, so commands are reached): no
//! panic, memory within the bounds, raw ranges within the chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbOutput;
use nettap_core::protocols::exchange::Limits;
use nettap_core::protocols::mysql::MySession;

fuzz_target!(|data: &[u8]| {
    let mut s = MySession::new(Limits { max_head: 1024, max_body: 4096 });
    let mut out = Vec::new();
    let (plan, mut bytes) = data.split_at(data.len().min(16));
    if plan.is_empty() {
        return;
    }
    if plan[0] & 1 == 0 {
        s.feed(false, b"\x0b\0\0\0\x0a5.5.5-x\0\0\0\0", 0, &mut out);
        let mut hello = vec![0x26, 0, 0, 1, 0x08, 0x82, 0x0f, 0x01];
        hello.extend([0; 28]);
        hello.extend(b"u\0\0d\0");
        hello[0] = (hello.len() - 4) as u8;
        s.feed(true, &hello, 0, &mut out);
        s.feed(false, b"\x07\0\0\x02\0\0\0\x02\0\0\0", 0, &mut out);
    }
    for (i, &p) in plan.iter().cycle().enumerate().take(4096) {
        if bytes.is_empty() {
            break;
        }
        let n = (p as usize % 64 + 1).min(bytes.len());
        let client = p & 0x80 == 0;
        s.feed(client, &bytes[..n], i as u64, &mut out);
        for o in &out {
            if let DbOutput::Raw(r) = o {
                assert!(r.start <= r.end && r.end <= n);
            }
        }
        if p == 0x7f {
            s.gap(client, 3, i as u64, &mut out);
        }
        bytes = &bytes[n..];
        out.clear();
    }
    s.close(u64::MAX, &mut out);
});

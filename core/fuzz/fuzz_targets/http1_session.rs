//! Arbitrary bytes, cut into pieces and fed to both directions of an HTTP/1
//! session: no panic, and memory stays within the parser's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::exchange::Limits;
use nettap_core::protocols::http1::Http1Session;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let limits = Limits { max_head: 1024, max_body: 4096 };
    let mut s = if control & 1 == 0 { Http1Session::new(limits) } else { Http1Session::midstream(limits) };
    let mut out = Vec::new();
    // Each byte of a small prefix picks a piece length and a direction.
    let (plan, mut bytes) = rest.split_at(rest.len().min(16));
    for (i, &p) in plan.iter().cycle().enumerate().take(4096) {
        if bytes.is_empty() {
            break;
        }
        let n = (p as usize % 64 + 1).min(bytes.len());
        let request = p & 0x80 == 0;
        s.feed(request, &bytes[..n], i as u64, &mut out);
        if p == 0x7f {
            s.gap(request, u64::from(bytes[0]), i as u64, &mut out);
        }
        bytes = &bytes[n..];
        out.clear();
    }
    s.close(u64::MAX, &mut out);
});

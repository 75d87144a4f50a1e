//! Arbitrary bytes, cut into pieces and fed to both directions of an HTTP/2
//! session (after the client preface): no panic, memory within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_sensor::protocols::exchange::Limits;
use nettap_sensor::protocols::http2::Http2Session;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_head: 1024, max_body: 4096 };
    let mut s = Http2Session::new(limits);
    let mut out = Vec::new();
    s.feed(true, PREFACE, 0, &mut out);
    // Each byte of a small prefix picks a piece length and a direction.
    let (plan, mut bytes) = data.split_at(data.len().min(16));
    for (i, &p) in plan.iter().cycle().enumerate().take(4096) {
        if bytes.is_empty() {
            break;
        }
        let n = (p as usize % 64 + 1).min(bytes.len());
        let request = p & 0x80 == 0;
        s.feed(request, &bytes[..n], i as u64, &mut out);
        if p == 0x7f {
            s.gap(request, 1);
        }
        bytes = &bytes[n..];
        out.clear();
    }
    s.close(u64::MAX, &mut out);
});

//! Arbitrary bytes, cut into pieces and fed to both directions of an HTTP/2
//! session, from the preface or joined mid-stream, with gaps: no panic,
//! memory within its bounds (libFuzzer's RSS limit), and every exchange
//! within the body limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::exchange::{HttpOutput, Limits};
use nettap_core::protocols::http2::{Http2Session, PREFACE};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let limits = Limits { max_head: 1024, max_body: 4096 };
    let mut out = Vec::new();
    let mut s = if mode & 1 == 0 {
        let mut s = Http2Session::new(limits);
        s.feed(true, PREFACE, 0, &mut out);
        s
    } else {
        Http2Session::midstream(limits)
    };
    // Each byte of a small prefix picks a piece length and a direction.
    let (plan, mut bytes) = data.split_at(data.len().min(16));
    for (i, &p) in plan.iter().cycle().enumerate().take(4096) {
        if bytes.is_empty() {
            break;
        }
        let n = (p as usize % 64 + 1).min(bytes.len());
        let request = p & 0x80 == 0;
        s.feed(request, &bytes[..n], i as u64, &mut out);
        if p & 0x7f == 0x7f {
            s.gap(request, u64::from(p & 0x0f) + 1, i as u64, &mut out);
        }
        bytes = &bytes[n..];
        check(&mut out, limits);
    }
    s.close(u64::MAX, &mut out);
    check(&mut out, limits);
});

fn check(out: &mut Vec<HttpOutput>, limits: Limits) {
    for o in out.drain(..) {
        if let HttpOutput::Exchange(e) = o {
            for m in std::iter::once(&e.request).chain(e.response.as_ref()) {
                assert!(m.body.len() <= limits.max_body, "body over its limit");
            }
        }
    }
}

//! Arbitrary chunks (any seq, any order, any truncation) into a connection
//! session: no panic, reassembly stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::events::Direction;
use nettap_core::protocols::exchange::Limits;
use nettap_core::stream::{Chunk, ConnSession};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let limits = Limits { max_head: 1024, max_body: 4096 };
    let mut s = ConnSession::new(data[0] & 1 == 1, None, limits, 8192);
    let mut rest = &data[1..];
    let mut seqs = [0u64; 2];
    while rest.len() >= 4 {
        let (hdr, tail) = rest.split_at(4);
        let dir = if hdr[0] & 1 == 0 { Direction::Send } else { Direction::Recv };
        let len = (hdr[1] as usize).min(tail.len());
        let jump = u64::from(hdr[2] % 8); // 0: in order; else a hole or a step back
        let i = (hdr[0] & 1) as usize;
        let seq = if hdr[0] & 2 == 0 { seqs[i] + jump } else { seqs[i].saturating_sub(jump * 16) };
        let chunk = Chunk {
            direction: dir,
            seq,
            ts_ns: seq,
            probe: 0,
            payload: &tail[..len],
            truncated: u32::from(hdr[3] & 0x0f),
        };
        s.on_chunk(chunk, &mut |_| {});
        assert!(s.buffered() <= 2 * 8192 + 8 * 256, "bounded: {}", s.buffered());
        seqs[i] = seqs[i].max(seq + len as u64 + u64::from(hdr[3] & 0x0f));
        rest = &tail[len..];
        if hdr[3] == 0xff {
            s.flush(&mut |_| {});
        }
    }
    s.close(0, &mut |_| {});
});

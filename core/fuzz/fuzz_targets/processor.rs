//! The whole processor on generated kernel records: each input is a script
//! of (operation, connection, length) triples with the bytes to send, so
//! opens, closes, chunks in and out of order, TLS takeovers and DNS reach it
//! in every order. It must never panic and must write only valid JSON lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::abi::nt_probe;
use nettap_core::clock::Clock;
use nettap_core::conn::EphemeralPorts;
use nettap_core::events::{ConnChange, Direction};
use nettap_core::host::NoHost;
use nettap_core::processor::Processor;
use nettap_core::protocols::exchange::Limits;
use nettap_core::record::JsonlWriter;
use nettap_core::testing::{Conn, EventGen};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let out = Shared::default();
    let mut p = Processor::new(
        4,
        Limits::default(),
        Clock::with_offset(0),
        Box::new(NoHost),
        EphemeralPorts::default(),
    );
    p.add_sink(Box::new(JsonlWriter::new(out.clone(), data.first().is_some_and(|b| b & 1 == 1))));
    let mut g = EventGen::default();
    let conns: Vec<Conn> = (0..6u64)
        .map(|i| {
            let remote = ["127.0.0.1:80", "127.0.0.1:53", "[::1]:443", "127.0.0.1:6379"][i as usize % 4];
            Conn::client(i + 1, 100 + i as u32 % 2, &format!("127.0.0.1:{}", 40000 + i), remote)
        })
        .collect();
    let mut seqs = [[0u64; 2]; 6];
    let mut rest = data;
    while rest.len() >= 3 {
        let (op, which, len) = (rest[0], rest[1] as usize % conns.len(), rest[2] as usize);
        rest = &rest[3..];
        let take = len.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let mut c = conns[which].clone();
        let dir = if op & 1 == 0 { Direction::Send } else { Direction::Recv };
        let record = match op % 8 {
            0 | 1 => {
                let seq = &mut seqs[which][dir as usize];
                let r = g.plain(&c, dir, *seq, payload);
                *seq += payload.len() as u64;
                r
            }
            2 | 3 => {
                // Out of order or repeated: an earlier or later offset.
                let seq = seqs[which][dir as usize].saturating_sub(u64::from(op >> 3));
                g.plain(&c, dir, seq, payload)
            }
            4 => g.conn(&c, if op & 16 == 0 { ConnChange::Open } else { ConnChange::Midstream }),
            5 => g.conn(&c, ConnChange::Close),
            6 => {
                c.tls = true;
                let probe = if op & 16 == 0 {
                    nt_probe::NT_PROBE_UPROBE_SSL_WRITE_EX
                } else {
                    nt_probe::NT_PROBE_UPROBE_SSL_READ_EX
                };
                g.data(&c, probe, dir, u64::from(op >> 5) * 7, payload, u32::from(op >> 6))
            }
            _ => g.dns(&Conn { id: 0, ..c }, dir, payload),
        };
        p.handle(&record).unwrap();
        if op == 0xff {
            p.tick(g.now + 400_000_000_000).unwrap();
        }
    }
    p.close_all(g.now).unwrap();
    p.report_drops(Vec::new(), g.now).unwrap();
    p.finish().unwrap();
    let text = out.0.lock().unwrap().clone();
    for line in String::from_utf8(text).expect("records are UTF-8").lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("each record is JSON");
    }
});

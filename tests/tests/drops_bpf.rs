//! A ring buffer made too small on purpose: the loss is said in `drop`
//! records whose byte counts are exactly the bytes missing from the data
//! records, and the sensor keeps running.

use nettap_e2e::*;

#[test]
fn tiny_ring_buffer_counts_every_lost_byte() {
    let port = free_port();
    let port_s = port.to_string();
    // 32 KiB holds at most one full 16 KiB chunk at a time: a 1 MiB burst must overflow.
    let mut sensor = Sensor::start(&[
        "--port",
        &port_s,
        "--ring-buffer-bytes",
        "32768",
        "--max-bytes-per-call",
        "16777216",
    ]);
    let (server, client, _dir) =
        Exchange::start(None, "127.0.0.1", None, "127.0.0.1", port, SIZES, &[]).finish();
    assert!(sensor.running(), "the sensor must survive a full ring buffer");
    let cap = sensor.stop();

    let expected: u64 = [&server, &client].iter().map(|p| (p.sent.len() + p.recv.len()) as u64).sum();
    let mut captured = 0u64;
    let mut missing = 0u64;
    for peer in [&server, &client] {
        for (dir, want) in [("send", &peer.sent), ("recv", &peer.recv)] {
            let s = cap.stream(peer.pid, dir);
            // What was kept is exact where it was kept.
            let mut at = s.start as usize;
            let mut off = 0usize;
            let mut gaps = s.gaps.iter().peekable();
            while off < s.bytes.len() {
                let gap_at = gaps.peek().map(|g| g.0 as usize);
                let run_end = gap_at.map_or(s.bytes.len(), |g| off + (g - at));
                assert!(
                    s.bytes[off..run_end] == want[at..at + run_end - off],
                    "{dir} bytes differ near {at}"
                );
                at += run_end - off;
                off = run_end;
                if let Some(g) = gaps.next() {
                    at += g.1 as usize;
                }
            }
            captured += s.bytes.len() as u64;
            missing += want.len() as u64 - s.bytes.len() as u64;
        }
    }
    let (count, bytes) = cap.dropped("ringbuf_full");
    assert!(count > 0, "a 32 KiB ring cannot hold 4 MiB of bursts without loss");
    assert_eq!(bytes, missing, "drop records must account for every missing byte");
    assert_eq!(captured + bytes, expected);
}

#[test]
fn per_call_cap_reports_truncated_bytes() {
    let port = free_port();
    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s, "--max-bytes-per-call", "1000"]);
    let sizes = [10, 5000];
    let (server, client, _dir) =
        Exchange::start(None, "127.0.0.1", None, "127.0.0.1", port, &sizes, &[]).finish();
    let cap = sensor.stop();
    for peer in [&server, &client] {
        let sends: Vec<_> =
            cap.of("data", peer.pid).into_iter().filter(|r| r["direction"] == "send").collect();
        // Every call's record keeps at most the cap, says what it did not keep,
        // and the next call starts right after the whole call.
        let mut next = 0u64;
        for r in &sends {
            let len = payload(r).len() as u64;
            let cut = r["truncated"].as_u64().unwrap_or(0);
            assert!(len <= 1000, "{r}");
            assert_eq!(r["seq"].as_u64().unwrap(), next, "{r}");
            let at = next as usize;
            assert!(payload(r) == peer.sent[at..at + len as usize], "kept bytes are exact");
            next += len + cut;
        }
        assert_eq!(next as usize, peer.sent.len());
        assert!(sends.iter().any(|r| r["truncated"].as_u64().unwrap_or(0) > 0), "5000-byte sends are cut");
    }
    assert_eq!(cap.dropped("ringbuf_full"), (0, 0), "truncation is not loss from a full ring");
}

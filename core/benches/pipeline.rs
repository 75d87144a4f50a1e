//! Throughput on one core, without the kernel: (1) the HTTP/1 and HTTP/2
//! parsers behind a connection session, (2) the whole user-space pipeline
//! (decode, connection table, session, JSON Lines) on replayed ring-buffer
//! records, and on a JVM agent's frames (what a JSSE client's plaintext
//! costs the sensor).
//!
//!     cargo bench -p nettap-core --bench pipeline
//!
//! Prints a Markdown table (MB/s and records/s) for docs/benchmarks.md,
//! per second of this thread's CPU time (so a machine busy with other work
//! lowers the figures less than wall-clock time would). An argument keeps
//! the rows whose name contains it: `-- 'reassembly), 100 B'`.
//! `NETTAP_BENCH_DUMP=FILE` appends the pipeline rows' JSON Lines to FILE.

use nettap_core::clock::Clock;
use nettap_core::conn::EphemeralPorts;
use nettap_core::events::{ConnChange, Direction};
use nettap_core::host::NoHost;
use nettap_core::processor::Processor;
use nettap_core::protocols::exchange::Limits;
use nettap_core::record::{in_jsonl, JsonlWriter, Record};
use nettap_core::redact::Policy;
use nettap_core::sink::Sink;
use nettap_core::stream::{Chunk, ConnSession};
use nettap_core::testing::{Conn, EventGen};
use std::io::Write;
use std::time::Duration;

fn exchange(body: usize) -> (Vec<u8>, Vec<u8>) {
    let req = format!(
        "POST /api/v1/items?id=42 HTTP/1.1\r\nHost: svc.test\r\nUser-Agent: bench\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
    );
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: bench\r\nContent-Length: {body}\r\n\r\n"
    );
    let payload: Vec<u8> = (0..body).map(|i| b'a' + (i % 26) as u8).collect();
    let mut q = req.into_bytes();
    q.extend_from_slice(&payload);
    let mut r = resp.into_bytes();
    r.extend_from_slice(&payload);
    (q, r)
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client's and a server's bytes for `streams` POSTs with `body`-byte
/// bodies each way, HPACK-encoded (dynamic table in use, as real peers do).
fn h2_conversation(body: usize, streams: u32) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..body).map(|i| b'a' + (i % 26) as u8).collect();
    let (mut ce, mut se) = (loona_hpack::Encoder::new(), loona_hpack::Encoder::new());
    let mut c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    c.extend(h2_frame(4, 0, 0, &[]));
    let mut s = h2_frame(4, 0, 0, &[]);
    let len = body.to_string();
    for i in 0..streams {
        let id = 1 + 2 * i;
        let req: [(&[u8], &[u8]); 7] = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"svc.test"),
            (b":path", b"/api/v1/items?id=42"),
            (b"user-agent", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", len.as_bytes()),
        ];
        c.extend(h2_frame(1, 4, id, &ce.encode(req)));
        for (k, part) in payload.chunks(16384).enumerate() {
            let last = (k + 1) * 16384 >= body;
            c.extend(h2_frame(0, if last { 1 } else { 0 }, id, part));
        }
        let resp: [(&[u8], &[u8]); 4] = [
            (b":status", b"200"),
            (b"content-type", b"application/json"),
            (b"server", b"bench"),
            (b"content-length", len.as_bytes()),
        ];
        s.extend(h2_frame(1, 4, id, &se.encode(resp)));
        for (k, part) in payload.chunks(16384).enumerate() {
            let last = (k + 1) * 16384 >= body;
            s.extend(h2_frame(0, if last { 1 } else { 0 }, id, part));
        }
    }
    (c, s)
}

/// HTTP/2 through a connection session: MB/s and exchanges/s.
fn h2_parser(body: usize) -> (f64, f64) {
    let streams = 100;
    let (c, srv) = h2_conversation(body, streams);
    let bytes = c.len() + srv.len();
    let (n, el) = time(Duration::from_secs(2), || {
        let mut s = ConnSession::new(false, None, Limits::default(), 1 << 20);
        let mut exchanges = 0;
        for (dir, bytes) in [(Direction::Send, &c), (Direction::Recv, &srv)] {
            let mut seq = 0u64;
            for piece in bytes.chunks(16384) {
                let chunk = Chunk { direction: dir, seq, ts_ns: 0, probe: 0, payload: piece, truncated: 0 };
                s.on_chunk(chunk, &mut |o| {
                    // As the processor does once the record is written.
                    if let nettap_core::stream::SessionOut::Exchange(e, _) = o {
                        nettap_core::protocols::spare::give_back(e);
                        exchanges += 1;
                    }
                });
                seq += piece.len() as u64;
            }
        }
        assert_eq!(exchanges, streams);
    });
    let secs = el.as_secs_f64();
    (n as f64 * bytes as f64 / secs / 1e6, n as f64 * streams as f64 / secs)
}

/// This thread's CPU time: on a machine shared with other work, wall-clock
/// time counts the turns other processes took; CPU time does not.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` repeatedly for about `for_at_least` of this thread's CPU time;
/// returns (iterations, CPU time). `NETTAP_BENCH_ITERS=N` runs it N times
/// instead, for counting instructions under a simulator (valgrind's
/// callgrind: a figure that a busy machine does not move).
fn time(for_at_least: Duration, mut f: impl FnMut()) -> (u64, Duration) {
    let fixed: Option<u64> = std::env::var("NETTAP_BENCH_ITERS").ok().and_then(|n| n.parse().ok());
    let start = cpu_time();
    let mut n = 0;
    while fixed.map_or(cpu_time() - start < for_at_least, |max| n < max) {
        f();
        n += 1;
    }
    (n, cpu_time() - start)
}

/// Whether the row `name` runs: every row, or those containing the first
/// argument that is not a flag (`cargo bench … -- 'reassembly), 100 B'`),
/// or the one named exactly after `=`.
fn wanted(name: &str) -> bool {
    std::env::args().skip(1).find(|a| !a.starts_with('-')).is_none_or(|f| match f.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(&f),
    })
}

fn parser(body: usize) -> (f64, f64) {
    let (req, resp) = exchange(body);
    let per_conn = 100;
    let bytes = (req.len() + resp.len()) * per_conn;
    let (n, el) = time(Duration::from_secs(2), || {
        let mut s = ConnSession::new(false, None, Limits::default(), 1 << 20);
        let (mut sq, mut sr) = (0u64, 0u64);
        let mut exchanges = 0;
        for _ in 0..per_conn {
            // One chunk per syscall-sized piece, as the kernel delivers them.
            for piece in req.chunks(16384) {
                let c = Chunk {
                    direction: Direction::Send,
                    seq: sq,
                    ts_ns: 0,
                    probe: 0,
                    payload: piece,
                    truncated: 0,
                };
                s.on_chunk(c, &mut |_| {});
                sq += piece.len() as u64;
            }
            for piece in resp.chunks(16384) {
                let c = Chunk {
                    direction: Direction::Recv,
                    seq: sr,
                    ts_ns: 0,
                    probe: 0,
                    payload: piece,
                    truncated: 0,
                };
                s.on_chunk(c, &mut |o| {
                    // As the processor does once the record is written.
                    if let nettap_core::stream::SessionOut::Exchange(e, _) = o {
                        nettap_core::protocols::spare::give_back(e);
                        exchanges += 1;
                    }
                });
                sr += piece.len() as u64;
            }
        }
        assert_eq!(exchanges, per_conn as u32);
    });
    let secs = el.as_secs_f64();
    (n as f64 * bytes as f64 / secs / 1e6, n as f64 * per_conn as f64 / secs)
}

/// A processor writing JSON Lines into `out`, with the default redaction or none.
/// JSON Lines written by `serde_json::to_writer` through a `BufWriter`, as
/// nettap wrote them before its own record writer: the same run measures both.
struct SerdeJsonLines<W: std::io::Write>(std::io::BufWriter<W>, bool);

impl<W: std::io::Write + Send> Sink for SerdeJsonLines<W> {
    fn record(&mut self, r: &Record<'_>) -> std::io::Result<()> {
        if in_jsonl(&r.body, self.1) {
            serde_json::to_writer(&mut self.0, r)?;
            self.0.write_all(b"\n")?;
        }
        Ok(())
    }
}

fn processor(out: impl std::io::Write + Send + 'static, raw: bool, redact: bool) -> Processor {
    processor_with(out, raw, redact, false)
}

fn processor_with(
    out: impl std::io::Write + Send + 'static,
    raw: bool,
    redact: bool,
    serde: bool,
) -> Processor {
    let mut p = Processor::new(
        8192,
        Limits::default(),
        Clock::with_offset(0),
        Box::new(NoHost),
        EphemeralPorts::default(),
    );
    if serde {
        p.add_sink(Box::new(SerdeJsonLines(std::io::BufWriter::with_capacity(1 << 20, out), raw)));
    } else {
        p.add_sink(Box::new(JsonlWriter::new(out, raw)));
    }
    if redact {
        p.set_redactor(default_redaction());
    }
    p
}

/// The JSON Lines of one pass over `records`, appended to `path`: two
/// builds' files compared byte for byte show a change kept the records.
fn dump(records: &[(Vec<u8>, usize)], raw: bool, redact: bool, path: &std::path::Path) {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("dump file");
    let mut p = processor(file, raw, redact);
    for (r, _) in records {
        p.handle(r).unwrap();
    }
    p.flush().unwrap();
}

/// Exchanges of every framing and some odd bytes, for the dump only.
fn variety(g: &mut EventGen) -> Vec<(Vec<u8>, usize)> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"zipped\": \"text \\u00e9 \xc3\xa9\"}").unwrap();
    let gz = gz.finish().unwrap();
    let mut gz_resp =
        format!("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", gz.len())
            .into_bytes();
    gz_resp.extend_from_slice(&gz);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            b"GET /a?x=1&token=s3cret HTTP/1.1\r\nHost: h.test\r\nAuthorization: Bearer abc\r\nCookie: a=b\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n".to_vec(),
        ),
        (
            b"POST /bin HTTP/1.1\r\nHOST: h.test\r\nX-Odd: caf\xe9 \xff\r\nCONTENT-LENGTH: 4\r\n\r\n\x00\xff\"\n".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nSet-Cookie: s=1\r\ncontent-length: 13\r\n\r\n{\"a\":\"\\\"\t\x01\x7f\"}".to_vec(),
        ),
        (b"HEAD /h HTTP/1.1\r\nHost: h.test\r\n\r\n".to_vec(), b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec()),
        (b"GET /z HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n".to_vec(), gz_resp),
    ];
    let c = Conn::client(9000, 77, "127.0.0.1:45000", "127.0.0.1:8080");
    let mut out = vec![(g.conn(&c, ConnChange::Open), 0)];
    let (mut sq, mut sr) = (0u64, 0u64);
    for (q, r) in pairs {
        out.push((g.plain(&c, Direction::Send, sq, &q), q.len()));
        out.push((g.plain(&c, Direction::Recv, sr, &r), r.len()));
        sq += q.len() as u64;
        sr += r.len() as u64;
    }
    out
}

/// The default redaction (as the sensor runs without configuration).
fn default_redaction() -> Option<Policy> {
    use nettap_core::redact::{Redactor, DEFAULT_FIELDS, DEFAULT_HEADERS};
    Some(Policy::new(Redactor::new(DEFAULT_HEADERS, DEFAULT_FIELDS, b"bench key"), Vec::new()))
}

fn pipeline(records: &[(Vec<u8>, usize)], raw: bool, redact: bool, serde: bool) -> (f64, f64) {
    if let Some(path) = std::env::var_os("NETTAP_BENCH_DUMP") {
        dump(records, raw, redact, path.as_ref());
        dump(&variety(&mut EventGen::default()), raw, redact, path.as_ref());
    }
    let payload: usize = records.iter().map(|(_, len)| len).sum();
    let (n, el) = time(Duration::from_secs(2), || {
        let mut p = processor_with(std::io::sink(), raw, redact, serde);
        for (r, _) in records {
            p.handle(r).unwrap();
        }
    });
    let secs = el.as_secs_f64();
    (n as f64 * payload as f64 / secs / 1e6, n as f64 * records.len() as f64 / secs)
}

/// A JVM agent's byte stream: its hello, then `exchanges` requests and
/// responses of 1 KiB bodies on each of 64 connections (SSLSocket hooks, so
/// each chunk names its endpoints), prost-encoded as the agent sends them;
/// and the kernel's opens of those connections.
fn agent_stream(g: &mut EventGen, exchanges: u64) -> (Vec<Vec<u8>>, Vec<u8>, usize) {
    use nettap_shared_proto::v1 as pb;
    use prost::Message;
    let (req, resp) = exchange(1024);
    let mut opens = Vec::new();
    let mut stream = pb::AgentFrame {
        kind: Some(pb::agent_frame::Kind::Hello(pb::AgentHello {
            pid: 300,
            runtime: "OpenJDK 64-Bit Server VM".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_length_delimited_to_vec();
    let endpoint = |a: std::net::SocketAddr| {
        let std::net::IpAddr::V4(ip) = a.ip() else { unreachable!() };
        Some(pb::Endpoint { ip: ip.octets().to_vec(), port: a.port().into() })
    };
    let mut payload = 0;
    for id in 0..64u64 {
        let c = Conn::client(id + 1, 300, &format!("127.0.0.1:{}", 40000 + id), "127.0.0.1:8443");
        opens.push(g.conn(&c, ConnChange::Open));
        for i in 0..exchanges {
            for (direction, hook, bytes) in [
                (pb::Direction::Send, pb::AgentHook::SslSocketWrite, &req),
                (pb::Direction::Recv, pb::AgentHook::SslSocketRead, &resp),
            ] {
                let frame = pb::AgentFrame {
                    kind: Some(pb::agent_frame::Kind::Data(pb::AgentData {
                        conn: Some(pb::AgentConn {
                            local: endpoint(c.local),
                            remote: endpoint(c.remote),
                            role: pb::Role::Client as i32,
                            fd: -1,
                            ..Default::default()
                        }),
                        direction: direction as i32,
                        hook: hook as i32,
                        seq: i * bytes.len() as u64,
                        ts_boot_ns: g.now,
                        tid: 301,
                        payload: bytes.clone().into(),
                    })),
                    ..Default::default()
                };
                frame.encode_length_delimited(&mut stream).unwrap();
                payload += bytes.len();
            }
        }
    }
    (opens, stream, payload)
}

/// The agent's stream through the frame reader and the processor, read 64
/// KiB at a time as the sensor reads its socket.
fn agent_pipeline(redact: bool) -> (f64, f64) {
    use nettap_core::agent::{AgentMsg, FrameReader};
    let exchanges = 50;
    let (opens, stream, payload) = agent_stream(&mut EventGen::default(), exchanges);
    let run = |out: Box<dyn std::io::Write + Send>| {
        let mut p = processor(out, false, redact);
        for o in &opens {
            p.handle(o).unwrap();
        }
        let mut reader = FrameReader::new();
        for read in stream.chunks(64 << 10) {
            reader.push(read);
            while let Some(frame) = reader.next_frame().unwrap() {
                p.on_agent(AgentMsg { pid: 300, frame }).unwrap();
            }
        }
        p.flush().unwrap();
    };
    // Once into memory: every exchange must come out as an http record.
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    run(Box::new(Shared(written.clone())));
    let http = written
        .lock()
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"{\"kind\":\"http\""))
        .count();
    assert_eq!(http as u64, 64 * exchanges, "http records of the agent's exchanges");
    let (n, el) = time(Duration::from_secs(2), || run(Box::new(std::io::sink())));
    let secs = el.as_secs_f64();
    (n as f64 * payload as f64 / secs / 1e6, n as f64 * (64 * exchanges) as f64 / secs)
}

/// A writer into a shared buffer.
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    println!("| workload | MB/s | per second |");
    println!("|---|---:|---:|");
    for body in [100, 4096, 65536] {
        let name = format!("HTTP/1.1 parser (session + reassembly), {body} B bodies");
        if wanted(&name) {
            let (mbs, ex) = parser(body);
            println!("| {name} | {mbs:.0} | {ex:.0} exchanges |");
        }
    }
    for body in [100, 4096, 65536] {
        let name = format!("HTTP/2 parser (session + HPACK), {body} B bodies");
        if wanted(&name) {
            let (mbs, ex) = h2_parser(body);
            println!("| {name} | {mbs:.0} | {ex:.0} exchanges |");
        }
    }
    // Replayed ring-buffer records: HTTP on 64 connections, and opaque binary.
    // Records generated as the kernel lays them out (nettap_core::testing).
    let mut g = EventGen::default();
    let (req, resp) = exchange(1024);
    let mut http = Vec::new();
    for id in 0..64u64 {
        let c = Conn::client(id + 1, 1234, &format!("127.0.0.1:{}", 40000 + id), "127.0.0.1:8080");
        http.push((g.conn(&c, ConnChange::Open), 0));
        for i in 0..50u64 {
            http.push((g.plain(&c, Direction::Send, i * req.len() as u64, &req), req.len()));
            http.push((g.plain(&c, Direction::Recv, i * resp.len() as u64, &resp), resp.len()));
        }
    }
    let blob: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let binary: Vec<(Vec<u8>, usize)> = (0..6400u64)
        .map(|i| {
            let c =
                Conn::client(1000 + i % 64, 1234, &format!("127.0.0.1:{}", 41000 + i % 64), "127.0.0.1:9000");
            (g.plain(&c, Direction::Send, (i / 64) * 4096, &blob), blob.len())
        })
        .collect();
    for (name, recs, raw, redact, serde) in [
        ("pipeline, HTTP/1.1 records (1 KiB bodies)", &http, false, false, false),
        ("pipeline, HTTP/1.1 records (1 KiB bodies), serde_json writer", &http, false, false, true),
        ("pipeline, HTTP/1.1 records, default redaction", &http, false, true, false),
        ("pipeline, HTTP/1.1 with --raw", &http, true, false, false),
        ("pipeline, HTTP/1.1 with --raw, serde_json writer", &http, true, false, true),
        ("pipeline, binary data records (4 KiB, base64)", &binary, false, false, false),
    ] {
        if !wanted(name) {
            continue;
        }
        let (mbs, rps) = pipeline(recs, raw, redact, serde);
        println!("| {name} | {mbs:.0} | {rps:.0} ring records |");
    }
    for (name, redact) in [
        ("pipeline, JVM agent frames, HTTP/1.1 records (1 KiB bodies)", false),
        ("pipeline, JVM agent frames, default redaction", true),
    ] {
        if wanted(name) {
            let (mbs, ex) = agent_pipeline(redact);
            println!("| {name} | {mbs:.0} | {ex:.0} exchanges |");
        }
    }
}

//! One connection's protocol state: where every chunk of the connection
//! meets, in order, keyed by the kernel's connection id (so a reused fd or
//! port never mixes two connections). The first bytes decide the protocol;
//! HTTP/1.x goes through reassembly into the parser and comes out as
//! exchanges; everything else (other protocols, bytes after an upgrade,
//! bytes that stopped parsing) comes out as raw chunks.

use super::db::Db;
use super::{Delivery, Reassembler};
use crate::events::Direction;
use crate::protocols::db::{DbExchange, DbSession};
use crate::protocols::exchange::{Exchange, HttpOutput, Limits};
use crate::protocols::http1::Http1Session;
use crate::protocols::kafka::{KafkaSession, TopicNames};
use crate::protocols::mongodb::MongoSession;
use crate::protocols::mysql::{self, MySession};
use crate::protocols::pgsql::{self, PgSession};
use crate::protocols::redis::RedisSession;
use crate::protocols::{classify, http2, Classification, HttpSession};

/// A chunk going in, or raw bytes coming out as a `data` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Direction.
    pub direction: Direction,
    /// Offset of `payload[0]` in that direction.
    pub seq: u64,
    /// Event time.
    pub ts_ns: u64,
    /// Hook that produced the bytes.
    pub probe: u32,
    /// Bytes.
    pub payload: &'a [u8],
    /// Bytes of the call after these that were not captured.
    pub truncated: u32,
}

/// A piece of output, borrowing the bytes where it can.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionOut<'a> {
    /// Bytes kept as a `data` record.
    Data(Chunk<'a>),
    /// A finished HTTP exchange, with the hook of its request's bytes.
    Exchange(Box<Exchange>, u32),
    /// A finished database or queue exchange, with the hook of its
    /// request's bytes.
    Db(Box<DbExchange>, u32),
    /// A parser's bound was reached: what it gave up (a `drop` record).
    Drop {
        /// Why.
        reason: &'static str,
        /// Bytes not kept.
        bytes: u64,
    },
    /// Bytes of an HTTP connection that never arrived (truncated calls,
    /// dropped records): the message they belonged to is lost.
    Gap {
        /// Direction.
        direction: Direction,
        /// Offset of the first missing byte.
        seq: u64,
        /// How many.
        len: u64,
    },
}

#[derive(Debug)]
struct Held {
    direction: Direction,
    seq: u64,
    ts_ns: u64,
    probe: u32,
    payload: Vec<u8>,
    truncated: u32,
}

impl Held {
    fn chunk(&self) -> Chunk<'_> {
        Chunk {
            direction: self.direction,
            seq: self.seq,
            ts_ns: self.ts_ns,
            probe: self.probe,
            payload: &self.payload,
            truncated: self.truncated,
        }
    }
}

#[derive(Debug)]
struct Http {
    session: HttpSession,
    /// The direction that carries requests.
    request: Direction,
    /// Hook of the latest request bytes.
    request_probe: u32,
    /// Chunks seen since joining mid-stream without finding a message start.
    unsynced_chunks: u32,
    /// Time of the latest bytes delivered (a gap ending a message ends it then).
    last_ts: u64,
}

#[derive(Debug)]
enum Proto {
    /// Waiting for enough first bytes.
    Unknown,
    /// HTTP/1.x or HTTP/2.
    Http(Box<Http>),
    /// A database or queue protocol.
    Db(Box<Db>),
    /// Anything else: chunks pass straight through.
    Raw,
}

/// Chunks held while the protocol is undecided, at most.
const MAX_HELD_CHUNKS: usize = 8;
/// A mid-stream HTTP candidate that has not found a message start after this
/// many chunks is taken for another protocol.
const MAX_UNSYNCED_CHUNKS: u32 = 64;

/// Protocol state of one connection.
#[derive(Debug)]
pub struct ConnSession {
    dirs: [Reassembler; 2],
    proto: Proto,
    held: Vec<Held>,
    midstream: bool,
    /// Seen from byte 0 of both directions: the protocol is decided by the
    /// bytes at offset 0, whichever chunk arrives first.
    from_first_byte: bool,
    request_hint: Option<Direction>,
    limits: Limits,
    /// Kafka topic names, shared with the processor's other connections.
    kafka_topics: TopicNames,
    scratch: Vec<HttpOutput>,
    /// Event time of the latest chunk (boot-time ns), for idle expiry.
    pub last_ts: u64,
    /// Fed TLS plaintext (its own offsets), not the socket's bytes.
    pub plaintext: bool,
}

fn idx(d: Direction) -> usize {
    match d {
        Direction::Send => 0,
        Direction::Recv => 1,
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Send => Direction::Recv,
        Direction::Recv => Direction::Send,
    }
}

/// The bytes of `c`'s direction from offset 0 as far as they are
/// contiguous among the held chunks and `c`; None before offset 0 arrived.
fn start_bytes(held: &[Held], c: Chunk<'_>) -> Option<Vec<u8>> {
    let mut parts: Vec<(u64, &[u8])> = held
        .iter()
        .filter(|h| h.direction == c.direction)
        .map(|h| (h.seq, &h.payload[..]))
        .chain(std::iter::once((c.seq, c.payload)))
        .collect();
    parts.sort_by_key(|&(seq, _)| seq);
    let mut first = Vec::new();
    for (seq, payload) in parts {
        let at = first.len() as u64;
        if seq > at {
            break;
        }
        first.extend_from_slice(payload.get((at - seq) as usize..).unwrap_or_default());
    }
    (!first.is_empty()).then_some(first)
}

/// Hands one in-order delivery of `direction` to the HTTP session.
fn deliver(
    http: &mut Http,
    direction: Direction,
    probe: u32,
    d: Delivery<'_>,
    scratch: &mut Vec<HttpOutput>,
    out: &mut impl FnMut(SessionOut<'_>),
) {
    let is_request = direction == http.request;
    scratch.clear();
    match d {
        Delivery::Gap { seq, len } => {
            // Inside a body the exchange survives, with `body_truncated`.
            if !http.session.gap(is_request, len, http.last_ts, scratch) {
                out(SessionOut::Gap { direction, seq, len });
            }
            pass_on(scratch, http.request_probe, &mut |_| unreachable!("a gap has no bytes"), out);
        }
        Delivery::Bytes { seq, ts_ns, data } => {
            http.last_ts = http.last_ts.max(ts_ns);
            if is_request {
                http.request_probe = probe;
            }
            http.session.feed(is_request, data, ts_ns, scratch);
            let raw = &mut |r: std::ops::Range<usize>| Chunk {
                direction,
                seq: seq + r.start as u64,
                ts_ns,
                probe,
                payload: &data[r],
                truncated: 0,
            };
            pass_on(scratch, http.request_probe, raw, out);
        }
    }
}

/// A Redis session joined mid-stream at chunk `c`, which starts a command.
fn redis_midstream(limits: Limits, c: Chunk<'_>) -> Db {
    Db::new(DbSession::Redis(RedisSession::midstream(limits)), c.direction, c.probe)
}

/// A Kafka session joined mid-stream at chunk `c`, which starts a request.
fn kafka_midstream(limits: Limits, topics: &TopicNames, c: Chunk<'_>) -> Db {
    let session = KafkaSession::midstream(limits).with_topics(topics.clone());
    Db::new(DbSession::Kafka(session), c.direction, c.probe)
}

/// The database session a chunk that starts mid-stream begins, if any.
fn db_midstream(limits: Limits, topics: &TopicNames, c: Chunk<'_>, first: &[u8]) -> Option<Db> {
    match classify(first) {
        Classification::Redis => Some(redis_midstream(limits, c)),
        Classification::Kafka => Some(kafka_midstream(limits, topics, c)),
        Classification::Mongodb => {
            Some(Db::new(DbSession::Mongodb(MongoSession::midstream(limits)), c.direction, c.probe))
        }
        _ if pgsql::resync::request_start(first) => {
            Some(Db::new(DbSession::Pgsql(PgSession::midstream(limits)), c.direction, c.probe))
        }
        _ if mysql::resync::request_start(first) => {
            Some(Db::new(DbSession::Mysql(MySession::midstream(limits)), c.direction, c.probe))
        }
        _ => None,
    }
}

/// The HTTP session's outputs as session outputs; `raw` makes the chunk of
/// a range of the bytes just fed.
fn pass_on<'a>(
    outputs: &mut Vec<HttpOutput>,
    request_probe: u32,
    raw: &mut impl FnMut(std::ops::Range<usize>) -> Chunk<'a>,
    out: &mut impl FnMut(SessionOut<'_>),
) {
    for o in outputs.drain(..) {
        match o {
            HttpOutput::Exchange(e) => out(SessionOut::Exchange(e, request_probe)),
            HttpOutput::Raw(r) => out(SessionOut::Data(raw(r))),
            HttpOutput::Error(e) => tracing::debug!(error = %e, "HTTP parse error; resynchronising"),
            HttpOutput::Drop { reason, bytes } => out(SessionOut::Drop { reason, bytes }),
        }
    }
}

impl ConnSession {
    /// A session for a connection seen from its first byte (`midstream`
    /// false) or joined later. `request_hint`: the direction that carries
    /// requests if the role is known (a client sends them). `reorder_limit`
    /// bounds early bytes held per direction.
    pub fn new(
        midstream: bool,
        request_hint: Option<Direction>,
        limits: Limits,
        reorder_limit: usize,
    ) -> Self {
        Self {
            dirs: [Reassembler::new(reorder_limit), Reassembler::new(reorder_limit)],
            proto: Proto::Unknown,
            held: Vec::new(),
            midstream,
            from_first_byte: false,
            request_hint,
            limits,
            kafka_topics: TopicNames::default(),
            scratch: Vec::new(),
            last_ts: 0,
            plaintext: false,
        }
    }

    /// The same, naming Kafka topic ids from `topics`, which the caller
    /// shares between its connections (a client learns ids on one and
    /// uses them on another).
    pub fn with_kafka_topics(self, topics: TopicNames) -> Self {
        Self { kafka_topics: topics, ..self }
    }

    /// A session for a connection whose every byte is yet to come (its open
    /// was seen and no earlier session had its bytes): both directions start
    /// at offset 0, and a later chunk that arrives first (calls on two CPUs
    /// swap in the ring buffer) waits for the first instead of deciding the
    /// protocol. Sessions re-created after eviction or idleness must not use
    /// this: their bytes do not start at 0.
    pub fn from_first_byte(mut self) -> Self {
        if !self.midstream {
            self.from_first_byte = true;
            for d in &mut self.dirs {
                d.expect(0);
            }
        }
        self
    }

    /// The session for the connection's TLS plaintext when this one (fed
    /// the socket's bytes) saw the client ask for TLS in a way the
    /// plaintext will not repeat (a MySQL greeting and SSLRequest); None
    /// when the plaintext's first bytes tell its protocol alone.
    pub fn after_tls(&self) -> Option<ConnSession> {
        let Proto::Db(db) = &self.proto else { return None };
        let db = db.after_tls(self.limits)?;
        let limit = self.dirs[0].limit();
        let mut s = ConnSession::new(false, self.request_hint, self.limits, limit)
            .with_kafka_topics(self.kafka_topics.clone());
        s.proto = Proto::Db(Box::new(db));
        s.plaintext = true;
        Some(s)
    }

    /// True when the connection carries HTTP (1.x or 2).
    pub fn is_http(&self) -> bool {
        matches!(self.proto, Proto::Http(_))
    }

    /// Bytes waiting in reassembly or classification.
    pub fn buffered(&self) -> usize {
        self.dirs.iter().map(Reassembler::buffered).sum::<usize>()
            + self.held.iter().map(|h| h.payload.len()).sum::<usize>()
    }

    /// Takes one chunk.
    pub fn on_chunk(&mut self, c: Chunk<'_>, out: &mut impl FnMut(SessionOut<'_>)) {
        self.last_ts = self.last_ts.max(c.ts_ns);
        if let Proto::Unknown = self.proto {
            if !self.decide(c) {
                return; // held until the first bytes say more
            }
            for h in std::mem::take(&mut self.held) {
                self.route(h.chunk(), out);
            }
        }
        self.route(c, out);
    }

    /// Chooses the protocol from the first bytes; false when `c` was held instead.
    fn decide(&mut self, c: Chunk<'_>) -> bool {
        if self.from_first_byte {
            match start_bytes(&self.held, c) {
                Some(first) => return self.classify_start(c, &first),
                None if self.hold(c) => return false,
                // Byte 0 never came (a lost record): decide as before, from
                // what arrived, and let reassembly start where it can.
                None => self.give_up_first_byte(),
            }
        }
        let mut first: Vec<u8> = self
            .held
            .iter()
            .filter(|h| h.direction == c.direction)
            .flat_map(|h| h.payload.iter().copied())
            .collect();
        first.extend_from_slice(c.payload);
        if self.midstream {
            if let Some(db) = db_midstream(self.limits, &self.kafka_topics, c, &first) {
                // A request (Redis, Kafka, MongoDB, PostgreSQL) starts here: its direction carries requests.
                self.proto = Proto::Db(Box::new(db));
                return true;
            }
            // Joined mid-stream: HTTP/2 if the bytes start with frames (a
            // write split over iovecs comes as several chunks: held until
            // its first frame is whole), else HTTP/1, which resynchronises
            // at the next message start.
            let session = match http2::frames_at(&first) {
                http2::Verdict::Frames => HttpSession::h2_midstream(self.limits),
                http2::Verdict::NeedMore if self.hold(c) => return false,
                _ => HttpSession::H1(Http1Session::midstream(self.limits)),
            };
            self.proto = Proto::Http(Box::new(Http {
                session,
                request: self.request_hint.unwrap_or(Direction::Send),
                request_probe: c.probe,
                unsynced_chunks: 0,
                last_ts: 0,
            }));
            return true;
        }
        self.classify_start(c, &first)
    }

    fn give_up_first_byte(&mut self) {
        self.from_first_byte = false;
        let limit = self.dirs[0].limit();
        self.dirs = [Reassembler::new(limit), Reassembler::new(limit)];
    }

    /// Decides from `first`, the first bytes of `c`'s direction; false when
    /// `c` was held for more.
    fn classify_start(&mut self, c: Chunk<'_>, first: &[u8]) -> bool {
        let verdict = classify(first);
        self.proto = match verdict {
            Classification::Http1Request | Classification::Http1Response => {
                let request =
                    if verdict == Classification::Http1Request { c.direction } else { other(c.direction) };
                Proto::Http(Box::new(Http {
                    session: HttpSession::H1(Http1Session::new(self.limits)),
                    request,
                    request_probe: c.probe,
                    unsynced_chunks: 0,
                    last_ts: 0,
                }))
            }
            // The client preface: this direction carries requests.
            Classification::Http2 => Proto::Http(Box::new(Http {
                session: HttpSession::h2(self.limits),
                request: c.direction,
                request_probe: c.probe,
                unsynced_chunks: 0,
                last_ts: 0,
            })),
            // A command: this direction carries requests.
            Classification::Redis => {
                let session = DbSession::Redis(RedisSession::new(self.limits));
                Proto::Db(Box::new(Db::new(session, c.direction, c.probe)))
            }
            Classification::Postgres => {
                let session = DbSession::Pgsql(PgSession::new(self.limits));
                Proto::Db(Box::new(Db::new(session, c.direction, c.probe)))
            }
            Classification::Kafka => {
                let session =
                    DbSession::Kafka(KafkaSession::new(self.limits).with_topics(self.kafka_topics.clone()));
                Proto::Db(Box::new(Db::new(session, c.direction, c.probe)))
            }
            Classification::Mongodb => {
                let session = DbSession::Mongodb(MongoSession::new(self.limits));
                Proto::Db(Box::new(Db::new(session, c.direction, c.probe)))
            }
            // The server speaks first: the other direction carries requests.
            Classification::MysqlGreeting => {
                let session = DbSession::Mysql(MySession::new(self.limits));
                Proto::Db(Box::new(Db::new(session, other(c.direction), c.probe)))
            }
            Classification::NeedMore if self.hold(c) => return false,
            _ => Proto::Raw,
        };
        true
    }

    /// Holds `c` until the first bytes say more; false when no more may be held.
    fn hold(&mut self, c: Chunk<'_>) -> bool {
        if self.held.len() >= MAX_HELD_CHUNKS || c.payload.is_empty() {
            return false;
        }
        self.held.push(Held {
            direction: c.direction,
            seq: c.seq,
            ts_ns: c.ts_ns,
            probe: c.probe,
            payload: c.payload.to_vec(),
            truncated: c.truncated,
        });
        true
    }

    fn route(&mut self, c: Chunk<'_>, out: &mut impl FnMut(SessionOut<'_>)) {
        if let Proto::Db(db) = &mut self.proto {
            let (direction, probe) = (c.direction, c.probe);
            self.dirs[idx(direction)].push(c.seq, c.ts_ns, c.payload, c.truncated as u64, &mut |d| {
                db.deliver(direction, probe, d, out)
            });
            return;
        }
        let Proto::Http(http) = &mut self.proto else {
            out(SessionOut::Data(c));
            return;
        };
        if !http.session.synced() {
            if let Some(db) =
                self.midstream.then(|| db_midstream(self.limits, &self.kafka_topics, c, c.payload)).flatten()
            {
                // Not HTTP after all: a database or queue request starts this chunk.
                self.proto = Proto::Db(Box::new(db));
                return self.route(c, out);
            }
            if classify(c.payload) == Classification::Http1Request {
                // Mid-stream, the first request start tells which way requests go.
                http.request = c.direction;
            } else if matches!(http.session, HttpSession::H1(_))
                && http2::frames_at(c.payload) == http2::Verdict::Frames
            {
                // Writes of HTTP/2 start with frames: it speaks HTTP/2 (its
                // session learns which way requests go from their headers).
                http.session = HttpSession::h2_midstream(self.limits);
            }
        }
        let scratch = &mut self.scratch;
        self.dirs[idx(c.direction)].push(c.seq, c.ts_ns, c.payload, c.truncated as u64, &mut |d| {
            deliver(http, c.direction, c.probe, d, scratch, out)
        });
        if http.session.synced() {
            http.unsynced_chunks = 0;
        } else {
            http.unsynced_chunks += 1;
            if http.unsynced_chunks > MAX_UNSYNCED_CHUNKS {
                self.proto = Proto::Raw; // never found a message start: not HTTP
            }
        }
    }

    /// Gives up on holes that will not fill (a timer calls this): what waits
    /// behind them is delivered.
    pub fn flush(&mut self, out: &mut impl FnMut(SessionOut<'_>)) {
        let Self { dirs, proto, scratch, .. } = self;
        for d in [Direction::Send, Direction::Recv] {
            match proto {
                Proto::Http(http) => {
                    let probe = http.request_probe;
                    dirs[idx(d)].flush(&mut |del| deliver(http, d, probe, del, scratch, out));
                }
                Proto::Db(db) => {
                    let probe = db.request_probe();
                    dirs[idx(d)].flush(&mut |del| db.deliver(d, probe, del, out));
                }
                // Raw connections never buffer; Unknown ones hold whole chunks instead.
                _ => dirs[idx(d)].flush(&mut |_| {}),
            }
        }
    }

    /// The connection ended at `ts_ns`: everything held or buffered comes
    /// out, and open exchanges are finished.
    pub fn close(&mut self, ts_ns: u64, out: &mut impl FnMut(SessionOut<'_>)) {
        if let Proto::Unknown = self.proto {
            self.proto = Proto::Raw;
            for h in std::mem::take(&mut self.held) {
                out(SessionOut::Data(h.chunk()));
            }
        }
        self.flush(out);
        if let Proto::Db(db) = &mut self.proto {
            db.close(ts_ns, out);
        }
        if let Proto::Http(http) = &mut self.proto {
            self.scratch.clear();
            http.session.close(ts_ns, &mut self.scratch);
            pass_on(
                &mut self.scratch,
                http.request_probe,
                &mut |_| unreachable!("a close has no bytes"),
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::fields::Fields;

    fn chunk(direction: Direction, seq: u64, payload: &[u8]) -> Chunk<'_> {
        Chunk { direction, seq, ts_ns: seq, probe: 1, payload, truncated: 0 }
    }

    #[derive(Debug, Default)]
    struct Got {
        data: Vec<(Direction, u64, Vec<u8>)>,
        exchanges: Vec<Exchange>,
        db: Vec<DbExchange>,
        gaps: Vec<(Direction, u64, u64)>,
        drops: Vec<(&'static str, u64)>,
    }

    fn collect(got: &mut Got, o: SessionOut<'_>) {
        match o {
            SessionOut::Data(c) => got.data.push((c.direction, c.seq, c.payload.to_vec())),
            SessionOut::Exchange(e, _) => got.exchanges.push(*e),
            SessionOut::Db(e, _) => got.db.push(*e),
            SessionOut::Gap { direction, seq, len } => got.gaps.push((direction, seq, len)),
            SessionOut::Drop { reason, bytes } => got.drops.push((reason, bytes)),
        }
    }

    fn feed(s: &mut ConnSession, chunks: &[Chunk<'_>], got: &mut Got) {
        for c in chunks {
            s.on_chunk(*c, &mut |o| collect(got, o));
        }
    }

    fn close(s: &mut ConnSession, got: &mut Got) {
        s.close(0, &mut |o| collect(got, o));
    }

    /// A session from the first byte, fed `req` cut at `rc` and `resp` cut
    /// at `pc`, then closed: everything that came out.
    fn split_run(req: &[u8], resp: &[u8], rc: usize, pc: usize) -> Got {
        use Direction::*;
        let mut s = session();
        let mut got = Got::default();
        feed(&mut s, &[chunk(Send, 0, &req[..rc]), chunk(Send, rc as u64, &req[rc..])], &mut got);
        feed(&mut s, &[chunk(Recv, 0, &resp[..pc]), chunk(Recv, pc as u64, &resp[pc..])], &mut got);
        close(&mut s, &mut got);
        got
    }

    fn session() -> ConnSession {
        ConnSession::new(false, None, Limits::default(), 1 << 20)
    }

    #[test]
    fn http_split_across_chunks_and_directions_becomes_exchanges() {
        use Direction::*;
        let mut s = session();
        let mut got = Got::default();
        let req = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        // "G" alone cannot decide: it is held, then replayed.
        feed(
            &mut s,
            &[chunk(Send, 0, &req[..1]), chunk(Send, 1, &req[1..9]), chunk(Send, 9, &req[9..])],
            &mut got,
        );
        feed(&mut s, &[chunk(Recv, 0, &resp[..20]), chunk(Recv, 20, &resp[20..])], &mut got);
        assert!(got.data.is_empty(), "{:?}", got.data);
        assert_eq!(got.exchanges.len(), 1);
        assert_eq!(got.exchanges[0].response.as_ref().unwrap().body, b"abc");
        assert!(s.is_http());
    }

    /// Property: however the two directions are cut into chunks (every
    /// single cut point of each), the exchanges are the same.
    #[test]
    fn any_split_of_either_direction_gives_the_same_exchanges() {
        let req: &[u8] = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\nGET /two HTTP/1.1\r\n\r\n";
        let resp: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n";
        let run = |rc: usize, pc: usize| {
            split_run(req, resp, rc, pc)
                .exchanges
                .into_iter()
                .map(|e| {
                    let r = e.response.unwrap();
                    (e.request.head.target, e.request.body, r.head.status, r.body)
                })
                .collect::<Vec<_>>()
        };
        let whole = run(req.len(), resp.len());
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0], ("/up".into(), b"wxyz".to_vec(), 201, b"ok".to_vec()));
        assert_eq!(whole[1], ("/two".into(), vec![], 200, b"A".to_vec()));
        for rc in 1..=req.len() {
            assert_eq!(run(rc, resp.len()), whole, "request cut at {rc}");
        }
        for pc in 1..=resp.len() {
            assert_eq!(run(req.len(), pc), whole, "response cut at {pc}");
        }
    }

    /// An HTTP/2 conversation with prior knowledge: a POST with a body and
    /// its answer with trailers, then a GET.
    fn h2_conversation() -> (Vec<u8>, Vec<u8>) {
        use crate::protocols::http2::{flag, kind, test_frame as frame, PREFACE};
        let (mut ce, mut se) = (loona_hpack::Encoder::new(), loona_hpack::Encoder::new());
        let enc = |e: &mut loona_hpack::Encoder<'_>, f: &[(&str, &str)]| {
            e.encode(f.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
        };
        let mut c = PREFACE.to_vec();
        c.extend(frame(kind::SETTINGS, 0, 0, &[]));
        let post = enc(&mut ce, &[(":method", "POST"), (":path", "/up"), (":authority", "h")]);
        c.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &post));
        c.extend(frame(kind::DATA, flag::END_STREAM, 1, b"wxyz"));
        let get = enc(&mut ce, &[(":method", "GET"), (":path", "/two"), (":authority", "h")]);
        c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &get));
        let mut s = frame(kind::SETTINGS, 0, 0, &[]);
        s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &enc(&mut se, &[(":status", "201")])));
        s.extend(frame(kind::DATA, 0, 1, b"ok"));
        s.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &enc(&mut se, &[("x-t", "1")]),
        ));
        s.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &enc(&mut se, &[(":status", "200")])));
        s.extend(frame(kind::DATA, flag::END_STREAM, 3, b"A"));
        (c, s)
    }

    /// Property: as for HTTP/1, every cut point of either direction gives
    /// the same HTTP/2 exchanges, with no byte left as data.
    #[test]
    fn any_split_of_an_h2_conversation_gives_the_same_exchanges() {
        let (req, resp) = h2_conversation();
        let run = |rc: usize, pc: usize| {
            let got = split_run(&req, &resp, rc, pc);
            assert!(got.data.is_empty() && got.drops.is_empty(), "{got:?}");
            got.exchanges
                .into_iter()
                .map(|e| {
                    let r = e.response.unwrap();
                    (e.request.head.target, e.request.body, r.head.status, r.body, r.trailers)
                })
                .collect::<Vec<_>>()
        };
        let whole = run(req.len(), resp.len());
        assert_eq!(whole.len(), 2);
        assert_eq!(
            whole[0],
            ("/up".into(), b"wxyz".to_vec(), 201, b"ok".to_vec(), Fields::from_iter([("x-t", "1")]))
        );
        assert_eq!(whole[1], ("/two".into(), vec![], 200, b"A".to_vec(), Fields::new()));
        for rc in 1..=req.len() {
            assert_eq!(run(rc, resp.len()), whole, "request cut at {rc}");
        }
        for pc in 1..=resp.len() {
            assert_eq!(run(req.len(), pc), whole, "response cut at {pc}");
        }
    }

    #[test]
    fn h2_joined_midstream_is_recognised_from_its_frames() {
        use Direction::*;
        let (req, resp) = h2_conversation();
        let at = crate::protocols::http2::PREFACE.len() + 9 + 4;
        // Stream 3's HEADERS (type 1, flags 5, stream 3) starts a write.
        let get = req.windows(6).position(|w| w == [1, 5, 0, 0, 0, 3]).unwrap() - 3;
        // Joined mid-way through stream 1's HEADERS: that write stays data;
        // the server's next write starts at a frame, so HTTP/2 is known from
        // there; roles unknown (no hint) are learnt from the headers.
        let mut s = ConnSession::new(true, None, Limits::default(), 1 << 20);
        let mut got = Got::default();
        feed(&mut s, &[chunk(Send, at as u64, &req[at..get])], &mut got);
        assert_eq!(got.data.len(), 1, "not HTTP/2 for all it can tell");
        feed(&mut s, &[chunk(Recv, 9, &resp[9..]), chunk(Send, get as u64, &req[get..])], &mut got);
        close(&mut s, &mut got);
        assert!(s.is_http());
        assert_eq!(got.data.len(), 1);
        assert_eq!(got.exchanges.len(), 2, "{got:?}");
        // /two ended while fed; stream 1 comes out at the close, its request unknown.
        let (two, up) = (&got.exchanges[0], &got.exchanges[1]);
        assert!(up.request.head.headers_incomplete && up.request.head.target.is_empty());
        assert_eq!(up.response.as_ref().unwrap().head.status, 201);
        assert_eq!(up.response.as_ref().unwrap().body, b"ok");
        assert_eq!((two.request.head.method.as_str(), two.request.head.target.as_str()), ("GET", "/two"));
        assert_eq!(two.response.as_ref().unwrap().body, b"A");
    }

    #[test]
    fn out_of_order_chunks_wait_for_their_turn() {
        use Direction::*;
        let mut s = session();
        let mut got = Got::default();
        let req = b"POST /u HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
        feed(
            &mut s,
            &[chunk(Send, 0, &req[..10]), chunk(Send, 20, &req[20..]), chunk(Send, 10, &req[10..20])],
            &mut got,
        );
        feed(&mut s, &[chunk(Recv, 0, b"HTTP/1.1 204 No Content\r\n\r\n")], &mut got);
        assert_eq!(got.exchanges.len(), 1);
        assert_eq!(got.exchanges[0].request.body, b"body");
    }

    #[test]
    fn other_protocols_pass_straight_through() {
        use Direction::*;
        let mut s = session();
        let mut got = Got::default();
        feed(&mut s, &[chunk(Send, 0, b"\x16\x03\x01hello"), chunk(Recv, 0, b"\x16\x03\x03")], &mut got);
        assert_eq!(got.data.len(), 2);
        assert!(!s.is_http());
    }

    #[test]
    fn undecided_bytes_come_out_at_close() {
        let mut s = session();
        let mut got = Got::default();
        feed(&mut s, &[chunk(Direction::Send, 0, b"P")], &mut got);
        assert!(got.data.is_empty());
        s.close(5, &mut |o| {
            if let SessionOut::Data(c) = o {
                got.data.push((c.direction, c.seq, c.payload.to_vec()))
            }
        });
        assert_eq!(got.data, vec![(Direction::Send, 0, b"P".to_vec())]);
    }

    #[test]
    fn midstream_resyncs_at_the_next_request_and_keeps_the_rest_raw() {
        use Direction::*;
        let mut s = ConnSession::new(true, None, Limits::default(), 1 << 20);
        let mut got = Got::default();
        feed(
            &mut s,
            &[
                chunk(Recv, 100, b"old body bytes"),
                chunk(Recv, 114, b"GET /new HTTP/1.1\r\n\r\n"),
                chunk(Send, 500, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
            &mut got,
        );
        assert_eq!(got.data, vec![(Recv, 100, b"old body bytes".to_vec())]);
        assert_eq!(got.exchanges.len(), 1, "the server's view: requests arrive on recv");
        assert_eq!(got.exchanges[0].request.head.target, "/new");
    }

    #[test]
    fn postgres_joined_midstream_is_found_at_its_next_query() {
        use Direction::*;
        let msg = |kind: u8, body: &[u8]| {
            let mut m = vec![kind];
            m.extend(((body.len() + 4) as u32).to_be_bytes());
            m.extend(body);
            m
        };
        // The tail of an answer to a query sent before the join, then a
        // query and its answer (one int4 column, one row).
        let old = [msg(b'C', b"SELECT 5\0"), msg(b'Z', b"I")].concat();
        let q = msg(b'Q', b"SELECT 1 AS n\0");
        let answer = [
            msg(b'T', b"\0\x01n\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0"),
            msg(b'D', b"\0\x01\0\0\0\x011"),
            msg(b'C', b"SELECT 1\0"),
            msg(b'Z', b"I"),
        ]
        .concat();
        let mut s = ConnSession::new(true, Some(Send), Limits::default(), 1 << 20);
        let mut got = Got::default();
        let at = 1000 + old.len() as u64;
        feed(&mut s, &[chunk(Recv, 1000, &old), chunk(Send, 300, &q), chunk(Recv, at, &answer)], &mut got);
        close(&mut s, &mut got);
        assert_eq!(got.data, vec![(Recv, 1000, old.clone())], "the old answer stays data");
        assert_eq!(got.db.len(), 1, "{got:?}");
        let DbExchange::Pgsql(e) = &got.db[0] else { panic!("{:?}", got.db[0]) };
        assert_eq!((e.request.kind, e.request.query.as_str()), ("query", "SELECT 1 AS n"));
        let r = e.response.as_ref().unwrap();
        assert_eq!((r.columns.clone(), r.command_tag.as_deref()), (vec!["n".to_string()], Some("SELECT 1")));
    }

    #[test]
    fn a_gap_ending_a_body_ends_the_message() {
        use Direction::*;
        let mut s = session();
        let mut got = Got::default();
        let mut c = chunk(Send, 0, b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\nxx");
        c.truncated = 98; // the rest of the body was never captured
        feed(&mut s, &[c, chunk(Send, 141, b"GET /b HTTP/1.1\r\n\r\n")], &mut got);
        feed(&mut s, &[chunk(Recv, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")], &mut got);
        assert_eq!(got.exchanges.len(), 1);
        let a = &got.exchanges[0].request;
        assert_eq!((a.head.target.as_str(), a.body.as_slice(), a.body_truncated), ("/a", &b"xx"[..], 98));
        assert!(got.gaps.is_empty(), "nothing lost that the record does not say");
    }

    #[test]
    fn a_gap_outside_any_body_resyncs_the_direction() {
        use Direction::*;
        let mut s = session();
        let mut got = Got::default();
        let mut c = chunk(Send, 0, b"GET /a HTT");
        c.truncated = 9; // the rest of the head was never captured
        feed(&mut s, &[c, chunk(Send, 19, b"GET /b HTTP/1.1\r\n\r\n")], &mut got);
        feed(&mut s, &[chunk(Recv, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")], &mut got);
        assert_eq!(got.exchanges.len(), 1);
        assert_eq!(got.exchanges[0].request.head.target, "/b");
        assert_eq!(got.gaps, vec![(Send, 10, 9)], "the loss is said");
    }
}

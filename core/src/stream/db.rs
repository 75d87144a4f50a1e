//! A connection whose first bytes chose a database or queue protocol: its
//! in-order bytes go to that protocol's session, and what comes out
//! becomes session outputs (exchanges, raw bytes, drops).

use super::{Chunk, Delivery, SessionOut};
use crate::events::Direction;
use crate::protocols::db::{DbOutput, DbSession};
use crate::protocols::exchange::Limits;
use crate::protocols::mysql::MySession;

/// The protocol state and which way requests go.
#[derive(Debug)]
pub(super) struct Db {
    session: DbSession,
    /// The direction that carries requests (the client's first bytes).
    request: Direction,
    /// Hook of the latest request bytes.
    request_probe: u32,
    /// Time of the latest bytes delivered.
    last_ts: u64,
    scratch: Vec<DbOutput>,
}

impl Db {
    pub(super) fn new(session: DbSession, request: Direction, probe: u32) -> Self {
        Self { session, request, request_probe: probe, last_ts: 0, scratch: Vec::new() }
    }

    /// The state that goes on in the connection's TLS plaintext, when the
    /// socket's bytes asked for TLS in a way the plaintext cannot show
    /// (MySQL: the greeting and the SSLRequest came before it).
    pub(super) fn after_tls(&self, limits: Limits) -> Option<Db> {
        match &self.session {
            DbSession::Mysql(s) if s.tls_requested() => Some(Db::new(
                DbSession::Mysql(MySession::after_tls(limits)),
                self.request,
                self.request_probe,
            )),
            _ => None,
        }
    }

    /// The hook of the latest request bytes (for bytes whose own is not kept).
    pub(super) fn request_probe(&self) -> u32 {
        self.request_probe
    }

    /// Hands one in-order delivery of `direction` to the protocol.
    pub(super) fn deliver(
        &mut self,
        direction: Direction,
        probe: u32,
        d: Delivery<'_>,
        out: &mut impl FnMut(SessionOut<'_>),
    ) {
        let is_request = direction == self.request;
        self.scratch.clear();
        match d {
            Delivery::Gap { seq, len } => {
                if !self.session.gap(is_request, len, self.last_ts, &mut self.scratch) {
                    out(SessionOut::Gap { direction, seq, len });
                }
                self.pass_on(&mut |_| unreachable!("a gap has no bytes"), out);
            }
            Delivery::Bytes { seq, ts_ns, data } => {
                self.last_ts = self.last_ts.max(ts_ns);
                if is_request {
                    self.request_probe = probe;
                }
                self.session.feed(is_request, data, ts_ns, &mut self.scratch);
                let raw = &mut |r: std::ops::Range<usize>| Chunk {
                    direction,
                    seq: seq + r.start as u64,
                    ts_ns,
                    probe,
                    payload: &data[r],
                    truncated: 0,
                };
                self.pass_on(raw, out);
            }
        }
    }

    /// The connection ended at `ts_ns`.
    pub(super) fn close(&mut self, ts_ns: u64, out: &mut impl FnMut(SessionOut<'_>)) {
        self.scratch.clear();
        self.session.close(ts_ns, &mut self.scratch);
        self.pass_on(&mut |_| unreachable!("a close has no bytes"), out);
    }

    fn pass_on<'a>(
        &mut self,
        raw: &mut impl FnMut(std::ops::Range<usize>) -> Chunk<'a>,
        out: &mut impl FnMut(SessionOut<'_>),
    ) {
        for o in self.scratch.drain(..) {
            match o {
                DbOutput::Exchange(e) => out(SessionOut::Db(e, self.request_probe)),
                DbOutput::Raw(r) => out(SessionOut::Data(raw(r))),
                DbOutput::Drop { reason, bytes } => out(SessionOut::Drop { reason, bytes }),
            }
        }
    }
}

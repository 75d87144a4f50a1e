//! What the database and queue parsers (Redis, PostgreSQL, …) produce and
//! how a connection's session drives whichever one its first bytes chose.
//! Each protocol pairs its own requests and responses; this is the one
//! shape the stream layer and the records see.

use super::kafka::{KafkaExchange, KafkaSession};
use super::mongodb::{MongoExchange, MongoSession};
use super::mysql::{MyExchange, MySession};
use super::pgsql::{PgExchange, PgSession};
use super::redis::{RedisExchange, RedisSession};
use std::ops::Range;

/// A parameter or cell value of the SQL protocols.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Text (text format, or a binary text type).
    Text(String),
    /// Bytes that are not text (binary format of a type not decoded, bytea).
    Bytes(Vec<u8>),
    /// A binary integer.
    Int(i64),
    /// A binary float.
    Float(f64),
    /// A binary boolean.
    Bool(bool),
}

impl Eq for Cell {}

/// A finished exchange of one of the protocols (always carried boxed, so
/// the variants' sizes do not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum DbExchange {
    /// A Redis command and its reply, or a push.
    Redis(RedisExchange),
    /// A PostgreSQL request and its answer.
    Pgsql(PgExchange),
    /// A MySQL/MariaDB command and its answer.
    Mysql(MyExchange),
    /// A Kafka request and its response.
    Kafka(KafkaExchange),
    /// A MongoDB request and its reply.
    Mongodb(MongoExchange),
}

impl DbExchange {
    /// The record kind (`redis`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            DbExchange::Redis(_) => "redis",
            DbExchange::Pgsql(_) => "pgsql",
            DbExchange::Mysql(_) => "mysql",
            DbExchange::Kafka(_) => "kafka",
            DbExchange::Mongodb(_) => "mongodb",
        }
    }

    /// One line's worth for a terminal: what was asked (shortened) and
    /// what came back (or why nothing did).
    pub fn summary(&self) -> (String, String) {
        match self {
            DbExchange::Redis(e) => e.summary(),
            DbExchange::Pgsql(e) => e.summary(),
            DbExchange::Mysql(e) => e.summary(),
            DbExchange::Kafka(e) => e.summary(),
            DbExchange::Mongodb(e) => e.summary(),
        }
    }

    /// From the request's first byte to the response's last.
    pub fn latency_ns(&self) -> Option<u64> {
        match self {
            DbExchange::Redis(e) => e.latency_ns(),
            DbExchange::Pgsql(e) => e.latency_ns(),
            DbExchange::Mysql(e) => e.latency_ns(),
            DbExchange::Kafka(e) => e.latency_ns(),
            DbExchange::Mongodb(e) => e.latency_ns(),
        }
    }

    /// Boot-time ns of the exchange's first byte (its request's, else its
    /// response's).
    pub fn start_ts(&self) -> u64 {
        match self {
            DbExchange::Redis(e) => e
                .request
                .as_ref()
                .map(|r| r.start_ts)
                .or(e.response.as_ref().map(|r| r.start_ts))
                .unwrap_or(0),
            DbExchange::Pgsql(e) => e.request.ts,
            DbExchange::Mysql(e) => e.request.ts,
            DbExchange::Kafka(e) => e.request.start_ts,
            DbExchange::Mongodb(e) => e.request.start_ts,
        }
    }
}

/// What feeding bytes to a protocol session produced.
#[derive(Debug, PartialEq, Eq)]
pub enum DbOutput {
    /// A finished exchange.
    Exchange(Box<DbExchange>),
    /// These bytes of the chunk just fed were not parsed (the direction
    /// stopped parsing): the caller keeps them as raw data.
    Raw(Range<usize>),
    /// Something the parser gave up, for a `drop` record.
    Drop {
        /// Why.
        reason: &'static str,
        /// Bytes lost.
        bytes: u64,
    },
}

/// The protocol state of one connection (its owner boxes it whole).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum DbSession {
    /// Redis (RESP2/RESP3).
    Redis(RedisSession),
    /// PostgreSQL (v3).
    Pgsql(PgSession),
    /// MySQL/MariaDB (protocol 10).
    Mysql(MySession),
    /// Kafka.
    Kafka(KafkaSession),
    /// MongoDB.
    Mongodb(MongoSession),
}

impl DbSession {
    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, data: &[u8], ts: u64, out: &mut Vec<DbOutput>) {
        match self {
            DbSession::Redis(s) => s.feed(request_side, data, ts, out),
            DbSession::Pgsql(s) => s.feed(request_side, data, ts, out),
            DbSession::Mysql(s) => s.feed(request_side, data, ts, out),
            DbSession::Kafka(s) => s.feed(request_side, data, ts, out),
            DbSession::Mongodb(s) => s.feed(request_side, data, ts, out),
        }
    }

    /// `len` bytes of a direction went missing; true when nothing was lost
    /// beyond them.
    pub fn gap(&mut self, request_side: bool, len: u64, ts: u64, out: &mut Vec<DbOutput>) -> bool {
        match self {
            DbSession::Redis(s) => s.gap(request_side, len, ts, out),
            DbSession::Pgsql(s) => s.gap(request_side, len, ts, out),
            DbSession::Mysql(s) => s.gap(request_side, len, ts, out),
            DbSession::Kafka(s) => s.gap(request_side, len, ts, out),
            DbSession::Mongodb(s) => s.gap(request_side, len, ts, out),
        }
    }

    /// The connection ended.
    pub fn close(&mut self, ts: u64, out: &mut Vec<DbOutput>) {
        match self {
            DbSession::Redis(s) => s.close(ts, out),
            DbSession::Pgsql(s) => s.close(ts, out),
            DbSession::Mysql(s) => s.close(ts, out),
            DbSession::Kafka(s) => s.close(ts, out),
            DbSession::Mongodb(s) => s.close(ts, out),
        }
    }
}

/// Helpers for the sessions' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{DbExchange, DbOutput, DbSession};

    /// Feeds `steps` (request side?, bytes, cut) to `s`, each in two pieces
    /// at its cut (the i-th at time i), then closes it: the exchanges and
    /// how many bytes passed on raw (any other output fails the test).
    pub(crate) fn feed_cut(mut s: DbSession, steps: &[(bool, &[u8], usize)]) -> (Vec<DbExchange>, usize) {
        let mut out = Vec::new();
        for (i, &(side, bytes, cut)) in steps.iter().enumerate() {
            let c = cut.min(bytes.len());
            for piece in [&bytes[..c], &bytes[c..]] {
                if !piece.is_empty() {
                    s.feed(side, piece, i as u64, &mut out);
                }
            }
        }
        s.close(u64::MAX, &mut out);
        let (mut exchanges, mut raw) = (Vec::new(), 0);
        for o in out {
            match o {
                DbOutput::Exchange(e) => exchanges.push(*e),
                DbOutput::Raw(r) => raw += r.len(),
                other => panic!("{other:?}"),
            }
        }
        (exchanges, raw)
    }
}

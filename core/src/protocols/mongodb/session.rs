//! One MongoDB connection: length-prefixed messages in each direction,
//! replies paired with requests by `responseTo`, bounded state. A request
//! with moreToCome gets no reply (written at once); a reply with
//! moreToCome (exhaust cursors, streaming hello) is followed by more
//! replies to it, each paired with the same request. Auth payloads
//! (saslStart/saslContinue/authenticate, speculativeAuthenticate, user
//! passwords) are never kept. A direction that loses its framing (a gap, a
//! length that makes no sense) passes its bytes on raw until a chunk starts
//! a message again: a request that makes sense, or a reply to a request
//! that waits.

use super::bson::Doc;
use super::message::{self, Message, Op, MORE_TO_COME};
use super::{request_start, Header, HEADER};
use crate::protocols::db::{DbExchange, DbOutput};
use crate::protocols::exchange::Limits;
use crate::protocols::framing::{self, Framer, HEAD_KEPT};
use std::collections::VecDeque;

/// A request: what it asked, of which database and collection, its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoRequest {
    /// The header's request id.
    pub request_id: i32,
    /// The message.
    pub message: Message,
    /// The command (the body's first field; `query` for a legacy query of
    /// a collection).
    pub command: Option<String>,
    /// `$db`, or the database of OP_QUERY's collection name.
    pub database: Option<String>,
    /// The collection the command names.
    pub collection: Option<String>,
    /// Message length.
    pub size: u64,
    /// First byte's time.
    pub start_ts: u64,
    /// Last byte's time.
    pub end_ts: u64,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoResponse {
    /// The message.
    pub message: Message,
    /// Message length.
    pub size: u64,
    /// First byte's time.
    pub start_ts: u64,
    /// Last byte's time.
    pub end_ts: u64,
}

/// A request and its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoExchange {
    /// The request.
    pub request: MongoRequest,
    /// The reply; `None` for a request with moreToCome (none comes) or
    /// when the connection ended first.
    pub response: Option<MongoResponse>,
}

impl MongoExchange {
    /// From the request's first byte to the reply's last.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response.as_ref().map(|r| r.end_ts.saturating_sub(self.request.start_ts))
    }

    /// The reply's `ok` (1 or 0), if it has one.
    pub fn ok(&self) -> Option<f64> {
        self.response.as_ref()?.message.document.as_ref()?.number("ok")
    }

    /// The command with its namespace, and the answer.
    pub fn summary(&self) -> (String, String) {
        let q = &self.request;
        let mut asked = q.command.clone().unwrap_or_else(|| q.message.op.name());
        match (&q.database, &q.collection) {
            (Some(db), Some(c)) => asked.push_str(&format!(" {db}.{c}")),
            (Some(db), None) => asked.push_str(&format!(" {db}")),
            _ => {}
        }
        let answer = match (&self.response, self.ok()) {
            (None, _) if q.message.flag(MORE_TO_COME) => "no reply asked".to_string(),
            (None, _) => "no reply".to_string(),
            (Some(_), Some(1.0)) => "ok".to_string(),
            (Some(r), Some(_)) => {
                let d = r.message.document.as_ref();
                let code = d.and_then(|d| d.number("code")).map(|c| c as i64);
                let name = d.and_then(|d| d.str("codeName")).unwrap_or("error");
                code.map_or_else(|| name.to_string(), |c| format!("{name} ({c})"))
            }
            (Some(r), None) => r.message.op.name(),
        };
        (asked, answer)
    }
}

/// Requests waiting for a reply, at most (their oldest go unanswered).
const MAX_PENDING: usize = 1024;
/// Bytes of requests waiting for a reply, at most, in largest messages
/// (decoded documents are kept until the reply: drivers rarely pipeline,
/// but a peer that never answers must not grow the session).
const MAX_PENDING_MESSAGES: u64 = 4;

/// Commands whose payloads are credentials or steps of an auth exchange.
const AUTH_COMMANDS: &[&str] =
    &["saslstart", "saslcontinue", "authenticate", "getnonce", "copydbsaslstart", "copydbgetnonce"];
/// Fields of auth commands (both ways) never kept.
const AUTH_FIELDS: &[&str] = &["payload", "key", "nonce", "password"];
/// Fields never kept in any document: the auth step inside a hello (and
/// its answer), and user passwords (createUser, updateUser).
const SECRET_FIELDS: &[&str] = &["speculativeAuthenticate", "pwd"];

/// A message's head: its header, whose length (header included) must be
/// one a server accepts.
fn body_len(head: &[u8]) -> Option<u64> {
    let h = Header::parse(head)?;
    h.sane_len().then(|| u64::from(h.len) - HEADER as u64)
}

fn framer() -> Framer {
    Framer::new(HEADER, body_len)
}

/// A whole message (or its head, when it was larger than the bound).
struct Frame {
    header: Header,
    body: Vec<u8>,
    skipped: u64,
    start_ts: u64,
    end_ts: u64,
}

impl From<framing::Frame> for Frame {
    fn from(f: framing::Frame) -> Self {
        let header = Header::parse(&f.head).expect("a frame's head is a header");
        Self { header, body: f.body, skipped: f.skipped, start_ts: f.start_ts, end_ts: f.end_ts }
    }
}

/// The state of one MongoDB connection.
#[derive(Debug)]
pub struct MongoSession {
    framers: [Framer; 2],
    /// Requests waiting for a reply, oldest first, under the id their
    /// reply will answer: their own, or after a reply with moreToCome
    /// (exhaust), that reply's.
    pending: VecDeque<(i32, MongoRequest)>,
    /// Their sizes, summed.
    pending_bytes: u64,
    /// Largest message decoded whole (and largest decompressed body).
    max_message: usize,
    /// Joined mid-stream: replies wait until a request was seen.
    await_request: bool,
}

impl MongoSession {
    /// A session within `limits`: messages up to 4 bodies' worth are
    /// decoded whole (an insert carries many documents), larger ones from
    /// the head kept.
    pub fn new(limits: Limits) -> Self {
        Self {
            framers: [framer(), framer()],
            pending: VecDeque::new(),
            pending_bytes: 0,
            max_message: limits.max_body.saturating_mul(4).max(HEAD_KEPT),
            await_request: false,
        }
    }

    /// A session joined mid-stream at a request's first byte.
    pub fn midstream(limits: Limits) -> Self {
        Self { await_request: true, ..Self::new(limits) }
    }

    /// True when both directions are between messages.
    pub fn synced(&self) -> bool {
        self.framers.iter().all(Framer::at_boundary)
    }

    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, data: &[u8], ts: u64, out: &mut Vec<DbOutput>) {
        let i = usize::from(!request_side);
        if !request_side && self.await_request && self.pending.is_empty() {
            out.push(DbOutput::Raw(0..data.len()));
            return;
        }
        if self.framers[i].lost {
            if !self.message_starts(request_side, data) {
                out.push(DbOutput::Raw(0..data.len()));
                return;
            }
            self.framers[i].reset(false);
        }
        if !request_side {
            self.await_request = false;
        }
        let mut frames = Vec::new();
        let lost =
            self.framers[i].feed_or_lose(data, ts, self.max_message, "mongodb_parse_error", &mut frames);
        for f in frames {
            if request_side {
                self.on_request(f.into(), out);
            } else {
                self.on_reply(f.into(), out);
            }
        }
        out.extend(lost);
    }

    /// Whether `data` starts a message: a sensible request, or a reply to
    /// a request that waits.
    fn message_starts(&self, request_side: bool, data: &[u8]) -> bool {
        if request_side {
            return request_start(data) == Some(true);
        }
        let Some(h) = Header::parse(data) else { return false };
        h.sane_len()
            && [message::OP_MSG, message::OP_REPLY, message::OP_COMPRESSED].contains(&h.op_code)
            && self.pending.iter().any(|(id, _)| *id == h.response_to)
    }

    fn lose(&mut self, i: usize) {
        self.framers[i].reset(true);
    }

    /// `len` bytes of a direction never came: its framing is lost until a
    /// chunk starts a message again, and requests waiting on a lost reply
    /// go unanswered. Always false: what the gap held is gone.
    pub fn gap(&mut self, request_side: bool, _len: u64, _ts: u64, out: &mut Vec<DbOutput>) -> bool {
        self.lose(usize::from(!request_side));
        if !request_side {
            self.flush_pending(out);
        }
        false
    }

    /// The connection ended: requests still waiting are written unanswered.
    pub fn close(&mut self, _ts: u64, out: &mut Vec<DbOutput>) {
        self.flush_pending(out);
    }

    fn flush_pending(&mut self, out: &mut Vec<DbOutput>) {
        self.pending_bytes = 0;
        for (_, request) in self.pending.drain(..) {
            emit(out, request, None);
        }
    }

    fn decode(&self, f: &Frame, out: &mut Vec<DbOutput>) -> Message {
        if f.skipped > 0 {
            out.push(DbOutput::Drop { reason: "mongodb_message_over_limit", bytes: f.skipped });
        }
        message::decode(&f.header, &f.body, f.skipped > 0, self.max_message)
    }

    fn on_request(&mut self, f: Frame, out: &mut Vec<DbOutput>) {
        let mut m = self.decode(&f, out);
        let (command, database, collection) = names(&m);
        keep_secrets(&mut m, command.as_deref());
        let more_to_come = m.flag(MORE_TO_COME);
        let request = MongoRequest {
            request_id: f.header.request_id,
            message: m,
            command,
            database,
            collection,
            size: u64::from(f.header.len),
            start_ts: f.start_ts,
            end_ts: f.end_ts,
        };
        if more_to_come {
            emit(out, request, None);
            return;
        }
        self.wait(request.request_id, request, out);
    }

    fn wait(&mut self, id: i32, request: MongoRequest, out: &mut Vec<DbOutput>) {
        let budget = MAX_PENDING_MESSAGES * self.max_message as u64;
        self.pending_bytes += request.size;
        while !self.pending.is_empty() && (self.pending.len() >= MAX_PENDING || self.pending_bytes > budget) {
            let (_, oldest) = self.pending.pop_front().expect("not empty");
            self.pending_bytes -= oldest.size;
            out.push(DbOutput::Drop { reason: "mongodb_pending_over_limit", bytes: 0 });
            emit(out, oldest, None);
        }
        self.pending.push_back((id, request));
    }

    fn on_reply(&mut self, f: Frame, out: &mut Vec<DbOutput>) {
        let Some(at) = self.pending.iter().position(|(id, _)| *id == f.header.response_to) else {
            // Nothing asked for this (the request came before a join, or
            // was lost): its bytes are counted.
            out.push(DbOutput::Drop { reason: "mongodb_unpaired_response", bytes: u64::from(f.header.len) });
            return;
        };
        let (_, request) = self.pending.remove(at).expect("found");
        self.pending_bytes -= request.size;
        let mut m = self.decode(&f, out);
        keep_secrets(&mut m, request.command.as_deref());
        if m.flag(MORE_TO_COME) {
            // More replies follow, each answering the one before it.
            self.wait(f.header.request_id, request.clone(), out);
        }
        let response = MongoResponse {
            message: m,
            size: u64::from(f.header.len),
            start_ts: f.start_ts,
            end_ts: f.end_ts,
        };
        emit(out, request, Some(response));
    }
}

/// Leaves out of `m`'s documents what is never kept: the auth fields of an
/// auth `command` (a request or its reply), secret fields of any.
fn keep_secrets(m: &mut Message, command: Option<&str>) {
    let auth = command.is_some_and(|c| AUTH_COMMANDS.contains(&c.to_ascii_lowercase().as_str()));
    for d in m.document.iter_mut().chain(m.more_documents.iter_mut()) {
        if auth {
            d.omit(AUTH_FIELDS, "auth");
        }
        d.omit(SECRET_FIELDS, "auth");
    }
}

/// The command, database and collection a request names.
fn names(m: &Message) -> (Option<String>, Option<String>, Option<String>) {
    let Some(d) = &m.document else { return (None, None, None) };
    match m.op {
        Op::Query => {
            let full = m.full_collection.as_deref().unwrap_or("");
            let (db, coll) = full.split_once('.').unwrap_or((full, ""));
            let db = Some(db.to_string()).filter(|d| !d.is_empty());
            if coll == "$cmd" {
                // A command, perhaps wrapped as {$query: {…}, $readPreference: …}.
                let inner = match d.get("$query").or(d.get("query")) {
                    Some(super::bson::Bson::Document(q)) => q,
                    _ => d,
                };
                let command = inner.first_key().map(str::to_string);
                (command, db, collection_of(inner))
            } else {
                (Some("query".into()), db, Some(coll.to_string()).filter(|c| !c.is_empty()))
            }
        }
        _ => (d.first_key().map(str::to_string), d.str("$db").map(str::to_string), collection_of(d)),
    }
}

/// The collection a command's body names: its first field's string value
/// (`{find: "people"}`), or getMore's `collection`.
fn collection_of(d: &Doc) -> Option<String> {
    let (name, value) = d.fields.first()?;
    if name == "getMore" {
        return d.str("collection").map(str::to_string);
    }
    match value {
        super::bson::Bson::String(c) => Some(c.clone()),
        _ => None,
    }
}

fn emit(out: &mut Vec<DbOutput>, request: MongoRequest, response: Option<MongoResponse>) {
    out.push(DbOutput::Exchange(Box::new(DbExchange::Mongodb(MongoExchange { request, response }))));
}

#[cfg(test)]
mod tests;

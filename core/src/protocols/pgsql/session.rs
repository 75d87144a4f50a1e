//! One PostgreSQL connection: the startup (user, database; passwords never
//! kept), simple queries, and the extended protocol (Parse/Bind/Describe/
//! Execute/Sync) paired with the server's answers in order. Each frontend
//! message that gets an answer waits in a queue; the backend's messages
//! complete them. An error makes the server skip to the next Sync, and so
//! do we.

use super::framer::{Frame, Framer};
use super::resync;
use super::values::{error_fields, Cell, PgError, Reader};
use crate::protocols::db::{DbExchange, DbOutput};
use crate::protocols::exchange::Limits;
use std::collections::{HashMap, VecDeque};

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRequest {
    /// `startup`, `ssl_request`, `cancel`, `query`, `prepare`, `execute`.
    pub kind: &'static str,
    /// The SQL text (of the statement executed, for `execute`).
    pub query: String,
    /// The prepared statement's name, when it has one.
    pub statement: Option<String>,
    /// Bound parameters, decoded by their format and type.
    pub params: Vec<Cell>,
    /// Time of the message.
    pub ts: u64,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgResponse {
    /// The command tag (`SELECT 3`, `INSERT 0 1`), the last of a simple query's.
    pub command_tag: Option<String>,
    /// Column names of the rows.
    pub columns: Vec<String>,
    /// Rows kept.
    pub rows: Vec<Vec<Cell>>,
    /// Rows not kept (over the bounds).
    pub rows_truncated: u64,
    /// The ErrorResponse, when it failed.
    pub error: Option<PgError>,
    /// COPY data messages and their bytes, either way.
    pub copy: Option<(u64, u64)>,
    /// SSLRequest's answer byte (`S` or `N`).
    pub ssl: Option<char>,
    /// Time of the first answering message.
    pub start_ts: u64,
    /// Time of the last.
    pub end_ts: u64,
}

/// A request and its response, with the session's user and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgExchange {
    /// The request.
    pub request: PgRequest,
    /// The response; `None` when the connection ended first.
    pub response: Option<PgResponse>,
    /// From the startup message.
    pub user: Option<String>,
    /// From the startup message.
    pub database: Option<String>,
}

impl PgExchange {
    /// From the request to the response's last message.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response.as_ref().map(|r| r.end_ts.saturating_sub(self.request.ts))
    }
}

impl PgExchange {
    /// The request's kind and SQL (shortened), and the answer in brief.
    pub fn summary(&self) -> (String, String) {
        let q = &self.request;
        let sql: String = q.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = sql.chars().take(80).collect();
        let asked = if short.is_empty() { q.kind.to_string() } else { format!("{} {short}", q.kind) };
        let answer = match &self.response {
            None => "no response".to_string(),
            Some(r) => match (&r.error, &r.command_tag, r.ssl) {
                (Some(e), _, _) => format!("{} {}", e.code, e.message),
                (None, Some(tag), _) => tag.clone(),
                (None, None, Some(b)) => b.to_string(),
                (None, None, None) => "ok".to_string(),
            },
        };
        (asked, answer)
    }
}

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_3: i32 = 196_608;
/// Frontend messages waiting for answers, at most.
const MAX_OPS: usize = 4096;
/// Prepared statements and portals remembered per connection, at most.
const MAX_NAMES: usize = 1024;
/// Rows kept per response (and no more than a body's worth of bytes).
pub const MAX_ROWS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Startup,
    Ssl,
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
}

#[derive(Debug)]
struct Op {
    kind: OpKind,
    /// The exchange this op completes, if it makes one.
    exchange: Option<(PgRequest, PgResponse)>,
    responded: bool,
}

#[derive(Debug, Clone)]
struct Statement {
    query: String,
    oids: Vec<u32>,
}

/// The state of one PostgreSQL connection.
#[derive(Debug)]
pub struct PgSession {
    /// [frontend, backend].
    framers: [Framer; 2],
    user: Option<String>,
    database: Option<String>,
    statements: HashMap<String, Statement>,
    portals: HashMap<String, (Option<String>, String, Vec<Cell>)>,
    ops: VecDeque<Op>,
    /// The latest RowDescription: names, and (type, format) per column.
    described: (Vec<String>, Vec<(u32, i16)>),
    max_bytes: usize,
    kept_bytes: usize,
    broken: bool,
    /// Joined mid-stream: the server's bytes are not parsed until a
    /// request waits and a chunk starts its answer (before that they may
    /// answer requests sent before the join, or start inside a message).
    await_answer: bool,
}

/// The first message types (besides asynchronous ones) that may answer
/// an op: a chunk the server writes first after it must start with one.
fn answer_types(kind: OpKind) -> &'static [u8] {
    match kind {
        OpKind::Query => b"TCEIGHW",
        OpKind::Parse => b"1E",
        OpKind::Bind => b"2E",
        OpKind::Describe => b"tTnE",
        OpKind::Execute => b"DCIsE",
        OpKind::Close => b"3E",
        OpKind::Sync => b"ZE",
        OpKind::Startup | OpKind::Ssl => b"",
    }
}

impl PgSession {
    /// A session within `limits` (a message over body + head is skipped).
    pub fn new(limits: Limits) -> Self {
        let max = limits.max_body + limits.max_head;
        Self {
            framers: [Framer::new(false, max), Framer::new(true, max)],
            user: None,
            database: None,
            statements: HashMap::new(),
            portals: HashMap::new(),
            ops: VecDeque::new(),
            described: Default::default(),
            max_bytes: limits.max_body,
            kept_bytes: 0,
            broken: false,
            await_answer: false,
        }
    }

    /// A session joined mid-stream at a chunk that starts a request (see
    /// [`resync::request_start`]): every message is typed, and the
    /// server's bytes count from the first chunk that starts the answer to
    /// a request seen. Bytes before that pass on raw; requests waiting when
    /// a chunk of the server's does not start their answer are written
    /// unanswered, never paired with what may be an older answer.
    pub fn midstream(limits: Limits) -> Self {
        let mut s = Self::new(limits);
        s.framers[0] = Framer::new(true, limits.max_body + limits.max_head);
        s.await_answer = true;
        s
    }

    /// Feeds bytes of the client (`true`) or server direction.
    pub fn feed(&mut self, frontend: bool, data: &[u8], ts: u64, out: &mut Vec<DbOutput>) {
        if self.broken {
            out.push(DbOutput::Raw(0..data.len()));
            return;
        }
        if !frontend && self.await_answer {
            let starts = self.ops.front().is_some_and(|o| resync::answer_start(data, answer_types(o.kind)));
            if !starts {
                self.unanswered(out);
                out.push(DbOutput::Raw(0..data.len()));
                return;
            }
            self.await_answer = false;
        }
        let mut frames = Vec::new();
        let framer = &mut self.framers[usize::from(!frontend)];
        let carried = framer.in_message;
        let result = framer.feed(data, &mut |f| frames.push(f));
        for f in frames {
            if frontend {
                self.on_frontend(f, ts, out);
            } else {
                self.on_backend(f, ts, out);
            }
            if self.broken {
                // TLS from here on: the plaintext comes from the TLS probes.
                return;
            }
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, "PostgreSQL framing lost; the connection's bytes pass on raw");
            out.push(DbOutput::Drop { reason: "pgsql_parse_error", bytes: carried });
            out.push(DbOutput::Raw(0..data.len()));
            self.give_up(out);
        }
    }

    /// `len` bytes never came: inside a message body they cost that message
    /// (counted); elsewhere pairing stops and the rest is raw.
    pub fn gap(&mut self, frontend: bool, len: u64, ts: u64, out: &mut Vec<DbOutput>) -> bool {
        let mut frames = Vec::new();
        if !self.broken && self.framers[usize::from(!frontend)].gap(len, &mut |f| frames.push(f)) {
            for f in frames {
                if frontend {
                    self.on_frontend(f, ts, out);
                } else {
                    self.on_backend(f, ts, out);
                }
            }
            return true;
        }
        self.give_up(out);
        false
    }

    /// The connection ended: requests still waiting are written unanswered.
    pub fn close(&mut self, _ts: u64, out: &mut Vec<DbOutput>) {
        self.give_up(out);
    }

    /// True when both directions are between messages.
    pub fn synced(&self) -> bool {
        !self.broken && self.framers.iter().all(Framer::at_boundary)
    }

    fn give_up(&mut self, out: &mut Vec<DbOutput>) {
        self.broken = true;
        self.unanswered(out);
    }

    /// Writes the requests that wait, with what they got so far.
    fn unanswered(&mut self, out: &mut Vec<DbOutput>) {
        while let Some(op) = self.ops.pop_front() {
            if let Some((request, response)) = op.exchange {
                let response = op.responded.then_some(response);
                self.emit(out, request, response);
            }
        }
    }

    fn emit(&mut self, out: &mut Vec<DbOutput>, request: PgRequest, response: Option<PgResponse>) {
        self.kept_bytes = 0;
        let e = PgExchange { request, response, user: self.user.clone(), database: self.database.clone() };
        out.push(DbOutput::Exchange(Box::new(DbExchange::Pgsql(e))));
    }

    fn push(&mut self, kind: OpKind, request: Option<PgRequest>, out: &mut Vec<DbOutput>) {
        if self.ops.len() >= MAX_OPS {
            out.push(DbOutput::Drop { reason: "pgsql_pipeline_over_limit", bytes: 0 });
            if let Some(Op { exchange: Some((q, _)), .. }) = self.ops.pop_front() {
                self.emit(out, q, None);
            }
        }
        let exchange = request.map(|q| (q, PgResponse::default()));
        self.ops.push_back(Op { kind, exchange, responded: false });
    }

    fn request(kind: &'static str, query: String, ts: u64) -> PgRequest {
        PgRequest { kind, query, statement: None, params: Vec::new(), ts }
    }

    fn on_frontend(&mut self, f: Frame, ts: u64, out: &mut Vec<DbOutput>) {
        let Frame::Message(kind, body) = f else {
            // A frontend message over the bound (a huge Bind or COPY row): counted.
            if let Frame::Skipped(_, len) = f {
                out.push(DbOutput::Drop { reason: "pgsql_message_over_limit", bytes: len });
            }
            return;
        };
        let mut r = Reader(&body);
        match kind {
            0 => match r.i32() {
                Some(SSL_REQUEST | GSSENC_REQUEST) => {
                    self.framers[1].expect_byte();
                    self.push(OpKind::Ssl, Some(Self::request("ssl_request", String::new(), ts)), out);
                }
                Some(CANCEL_REQUEST) => self.emit(out, Self::request("cancel", String::new(), ts), None),
                Some(PROTOCOL_3) => {
                    while let (Some(k), Some(v)) = (r.cstr(), r.cstr()) {
                        match k.as_str() {
                            "user" => self.user = Some(v),
                            "database" => self.database = Some(v),
                            _ => {}
                        }
                    }
                    self.push(OpKind::Startup, Some(Self::request("startup", String::new(), ts)), out);
                }
                _ => {
                    out.push(DbOutput::Drop { reason: "pgsql_parse_error", bytes: body.len() as u64 });
                    self.give_up(out);
                }
            },
            b'Q' => {
                let q = r.cstr().unwrap_or_default();
                self.push(OpKind::Query, Some(Self::request("query", q, ts)), out);
            }
            b'P' => {
                let name = r.cstr().unwrap_or_default();
                let query = r.cstr().unwrap_or_default();
                let n = r.i16().unwrap_or(0).max(0);
                let oids = (0..n).map_while(|_| r.i32().map(|o| o as u32)).collect();
                if self.statements.len() >= MAX_NAMES && !self.statements.contains_key(&name) {
                    self.statements.clear();
                }
                self.statements.insert(name.clone(), Statement { query: query.clone(), oids });
                // A named statement is prepared for later: its own exchange.
                let request = (!name.is_empty())
                    .then(|| PgRequest { statement: Some(name), ..Self::request("prepare", query, ts) });
                self.push(OpKind::Parse, request, out);
            }
            b'B' => {
                let portal = r.cstr().unwrap_or_default();
                let name = r.cstr().unwrap_or_default();
                let st = self.statements.get(&name).cloned();
                let nf = r.i16().unwrap_or(0).max(0) as usize;
                let formats: Vec<i16> = (0..nf).map_while(|_| r.i16()).collect();
                let n = r.i16().unwrap_or(0).max(0) as usize;
                let mut params = Vec::with_capacity(n.min(1024));
                for i in 0..n {
                    let format = match formats.len() {
                        0 => 0,
                        1 => formats[0],
                        _ => formats.get(i).copied().unwrap_or(0),
                    };
                    let oid = st.as_ref().and_then(|s| s.oids.get(i).copied()).unwrap_or(0);
                    let Some(v) = r.value(format, oid) else { break };
                    params.push(v);
                }
                if self.portals.len() >= MAX_NAMES && !self.portals.contains_key(&portal) {
                    self.portals.clear();
                }
                let stmt_name = (!name.is_empty()).then_some(name);
                self.portals.insert(portal, (stmt_name, st.map(|s| s.query).unwrap_or_default(), params));
                self.push(OpKind::Bind, None, out);
            }
            b'D' => self.push(OpKind::Describe, None, out),
            b'E' => {
                let portal = r.cstr().unwrap_or_default();
                let (statement, query, params) = self.portals.get(&portal).cloned().unwrap_or_default();
                let request = PgRequest { statement, params, ..Self::request("execute", query, ts) };
                self.push(OpKind::Execute, Some(request), out);
            }
            b'C' => self.push(OpKind::Close, None, out),
            b'S' => self.push(OpKind::Sync, None, out),
            b'd' => self.count_copy(body.len()),
            // Flush, Terminate, CopyDone/Fail: nothing answers them alone;
            // password messages ('p') are never kept.
            _ => {}
        }
    }

    fn count_copy(&mut self, len: usize) {
        if let Some((_, resp)) = self.ops.front_mut().and_then(|o| o.exchange.as_mut()) {
            let (n, b) = resp.copy.get_or_insert((0, 0));
            *n += 1;
            *b += len as u64;
        }
    }

    /// The front op, answered at `ts`.
    fn front(&mut self, ts: u64) -> Option<&mut Op> {
        let op = self.ops.front_mut()?;
        if let Some((_, resp)) = op.exchange.as_mut() {
            if !op.responded {
                resp.start_ts = ts;
            }
            resp.end_ts = ts;
        }
        op.responded = true;
        Some(op)
    }

    /// Pops the front op if it is `kind`, emitting its exchange.
    fn complete(&mut self, kind: OpKind, out: &mut Vec<DbOutput>) {
        if self.ops.front().map(|o| o.kind) != Some(kind) {
            return;
        }
        if let Some(Op { exchange: Some((q, r)), .. }) = self.ops.pop_front() {
            self.emit(out, q, Some(r));
        }
    }

    fn on_backend(&mut self, f: Frame, ts: u64, out: &mut Vec<DbOutput>) {
        let (kind, body) = match f {
            Frame::Message(kind, body) => (kind, body),
            Frame::Skipped(b'D', _) => {
                // A row over the bound: counted as not kept.
                if let Some((_, resp)) = self.front(ts).and_then(|o| o.exchange.as_mut()) {
                    resp.rows_truncated += 1;
                }
                return;
            }
            Frame::Skipped(_, len) => {
                out.push(DbOutput::Drop { reason: "pgsql_message_over_limit", bytes: len });
                return;
            }
        };
        let front_kind = self.ops.front().map(|o| o.kind);
        if front_kind == Some(OpKind::Ssl) {
            let Some(Op { exchange: Some((q, mut r)), .. }) = self.ops.pop_front() else { return };
            (r.start_ts, r.end_ts, r.ssl) = (ts, ts, Some(char::from(kind)));
            self.emit(out, q, Some(r));
            if kind != b'N' {
                self.broken = true; // TLS (or GSS) from the next byte on
                self.give_up(out);
            }
            return;
        }
        match kind {
            b'Z' => {
                self.front(ts);
                match front_kind {
                    Some(OpKind::Startup | OpKind::Query) => self.complete(front_kind.unwrap(), out),
                    _ => {
                        // Everything up to the Sync is done.
                        while let Some(op) = self.ops.pop_front() {
                            let sync = op.kind == OpKind::Sync;
                            if let Some((q, r)) = op.exchange {
                                self.emit(out, q, Some(r));
                            }
                            if sync {
                                break;
                            }
                        }
                    }
                }
            }
            b'1' => {
                self.front(ts);
                // A named statement's exchange ends; an unnamed one has none.
                self.complete(OpKind::Parse, out);
            }
            b'2' => {
                self.front(ts);
                self.pop_if(OpKind::Bind);
            }
            b'3' => {
                self.front(ts);
                self.pop_if(OpKind::Close);
            }
            b'n' => {
                self.front(ts);
                self.described = Default::default();
                self.pop_if(OpKind::Describe);
            }
            b'T' => {
                self.described = row_description(&body);
                self.kept_bytes = 0;
                let described = self.described.0.clone();
                if front_kind == Some(OpKind::Describe) {
                    self.front(ts);
                    self.pop_if(OpKind::Describe);
                } else if let Some((_, resp)) = self.front(ts).and_then(|o| o.exchange.as_mut()) {
                    resp.columns = described;
                }
            }
            b'D' => self.row(&body, ts),
            b'C' | b'I' | b's' => {
                let tag = match kind {
                    b'C' => Reader(&body).cstr(),
                    b's' => Some("PortalSuspended".to_string()),
                    _ => None,
                };
                let described = self.described.0.clone();
                if let Some((_, resp)) = self.front(ts).and_then(|o| o.exchange.as_mut()) {
                    resp.command_tag = tag;
                    if resp.columns.is_empty() && !resp.rows.is_empty() {
                        resp.columns = described;
                    }
                }
                self.complete(OpKind::Execute, out);
            }
            b'E' => {
                let e = error_fields(&body);
                match front_kind {
                    Some(OpKind::Startup | OpKind::Query) => {
                        if let Some((_, resp)) = self.front(ts).and_then(|o| o.exchange.as_mut()) {
                            resp.error = Some(e);
                        }
                        if front_kind == Some(OpKind::Startup) {
                            self.complete(OpKind::Startup, out);
                        }
                    }
                    _ => {
                        // The server skips to the Sync: every exchange before it failed.
                        for op in self.ops.iter_mut().take_while(|o| o.kind != OpKind::Sync) {
                            if let Some((_, resp)) = op.exchange.as_mut() {
                                if !op.responded {
                                    resp.start_ts = ts;
                                }
                                resp.end_ts = ts;
                                resp.error = Some(e.clone());
                            }
                            op.responded = true;
                        }
                        while self.ops.front().is_some_and(|o| o.kind != OpKind::Sync) {
                            if let Some(Op { exchange: Some((q, r)), .. }) = self.ops.pop_front() {
                                self.emit(out, q, Some(r));
                            }
                        }
                    }
                }
            }
            b'd' => self.count_copy(body.len()),
            // Authentication, ParameterStatus, BackendKeyData, notices,
            // notifications, ParameterDescription, copy starts: nothing to pair.
            _ => {}
        }
    }

    fn pop_if(&mut self, kind: OpKind) {
        if self.ops.front().map(|o| o.kind) == Some(kind) {
            self.ops.pop_front();
        }
    }

    fn row(&mut self, body: &[u8], ts: u64) {
        let types = self.described.1.clone();
        let (max_bytes, kept) = (self.max_bytes, self.kept_bytes);
        let Some(op) = self.front(ts) else { return };
        let Some((_, resp)) = op.exchange.as_mut() else { return };
        if resp.rows.len() >= MAX_ROWS || kept + body.len() > max_bytes {
            resp.rows_truncated += 1;
            return;
        }
        let mut r = Reader(body);
        let n = r.i16().unwrap_or(0).max(0) as usize;
        let cells = (0..n)
            .map_while(|i| {
                let (oid, format) = types.get(i).copied().unwrap_or((0, 0));
                r.value(format, oid)
            })
            .collect();
        resp.rows.push(cells);
        self.kept_bytes += body.len();
    }
}

/// A RowDescription's column names and (type OID, format) pairs.
fn row_description(body: &[u8]) -> (Vec<String>, Vec<(u32, i16)>) {
    let mut r = Reader(body);
    let n = r.i16().unwrap_or(0).max(0);
    let mut names = Vec::new();
    let mut types = Vec::new();
    for _ in 0..n {
        let Some(name) = r.cstr() else { break };
        // table oid (4), column (2), type oid (4), size (2), modifier (4), format (2)
        let Some(rest) = r.bytes(18) else { break };
        let oid = u32::from_be_bytes(rest[6..10].try_into().expect("4 bytes"));
        let format = i16::from_be_bytes(rest[16..18].try_into().expect("2 bytes"));
        names.push(name);
        types.push((oid, format));
    }
    (names, types)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocols::db::DbSession;

    /// A typed message: type, length, body.
    pub(crate) fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend(((body.len() + 4) as u32).to_be_bytes());
        m.extend(body);
        m
    }

    fn startup() -> Vec<u8> {
        let body = b"\0\x03\0\0user\0alice\0database\0shop\0\0";
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend(body);
        m
    }

    fn row_description(names: &[&str]) -> Vec<u8> {
        let mut b = (names.len() as i16).to_be_bytes().to_vec();
        for n in names {
            b.extend(n.as_bytes());
            b.push(0);
            b.extend([0, 0, 0, 0, 0, 0]); // table, column
            b.extend(23u32.to_be_bytes()); // int4
            b.extend([0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0]); // size, modifier, text format
        }
        msg(b'T', &b)
    }

    fn data_row(cells: &[Option<&str>]) -> Vec<u8> {
        let mut b = (cells.len() as i16).to_be_bytes().to_vec();
        for c in cells {
            match c {
                Some(t) => {
                    b.extend((t.len() as i32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
                None => b.extend((-1i32).to_be_bytes()),
            }
        }
        msg(b'D', &b)
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    fn run(client: &[u8], server: &[u8], cut: usize) -> Vec<PgExchange> {
        let mut s = PgSession::new(Limits::default());
        let mut out = Vec::new();
        // Requests first, then answers, each cut at `cut`.
        for (side, bytes) in [(true, client), (false, server)] {
            let c = cut.min(bytes.len());
            s.feed(side, &bytes[..c], 1, &mut out);
            s.feed(side, &bytes[c..], 2, &mut out);
        }
        s.close(3, &mut out);
        out.into_iter()
            .map(|o| match o {
                DbOutput::Exchange(e) => match *e {
                    DbExchange::Pgsql(p) => p,
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn startup_and_a_simple_query_at_every_split() {
        let mut client = startup();
        client.extend(msg(b'p', b"hunter2\0"));
        client.extend(msg(b'Q', b"SELECT a, b FROM t\0"));
        let mut server = msg(b'R', &3u32.to_be_bytes()); // cleartext password asked
        server.extend(msg(b'R', &0u32.to_be_bytes()));
        server.extend(msg(b'S', b"server_version\x0015\0"));
        server.extend(ready());
        server.extend(row_description(&["a", "b"]));
        server.extend(data_row(&[Some("1"), None]));
        server.extend(msg(b'C', b"SELECT 1\0"));
        server.extend(ready());
        let cuts = client.len().max(server.len());
        for cut in 0..=cuts {
            let got = run(&client, &server, cut);
            assert_eq!(got.len(), 2, "cut {cut}: {got:?}");
            assert_eq!((got[0].request.kind, got[0].user.as_deref()), ("startup", Some("alice")));
            assert_eq!(got[1].database.as_deref(), Some("shop"));
            let r = got[1].response.as_ref().unwrap();
            assert_eq!(got[1].request.query, "SELECT a, b FROM t");
            assert_eq!(
                (r.command_tag.as_deref(), r.columns.clone()),
                (Some("SELECT 1"), vec!["a".into(), "b".into()])
            );
            assert_eq!(r.rows, vec![vec![Cell::Text("1".into()), Cell::Null]]);
            assert!(!format!("{got:?}").contains("hunter2"), "the password is never kept");
        }
    }

    #[test]
    fn extended_protocol_pairs_executes_and_an_error_skips_to_sync() {
        let mut client = startup();
        // Parse (named, one int4 parameter), Bind text "7", Describe, Execute, Sync.
        client.extend(msg(b'P', b"s1\0SELECT $1::int\0\0\x01\0\0\0\x17"));
        client.extend(msg(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x017\0\0"));
        client.extend(msg(b'D', b"P\0"));
        client.extend(msg(b'E', b"\0\0\0\0\0"));
        client.extend(msg(b'S', b""));
        // A second unit whose Bind fails: its Execute is never run.
        client.extend(msg(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x01x\0\0"));
        client.extend(msg(b'E', b"\0\0\0\0\0"));
        client.extend(msg(b'S', b""));
        let mut server = msg(b'R', &0u32.to_be_bytes());
        server.extend(ready());
        server.extend(msg(b'1', b""));
        server.extend(msg(b'2', b""));
        server.extend(row_description(&["int4"]));
        server.extend(data_row(&[Some("7")]));
        server.extend(msg(b'C', b"SELECT 1\0"));
        server.extend(ready());
        server.extend(msg(b'E', b"SERROR\0C22P02\0Minvalid input syntax for type integer: \"x\"\0\0"));
        server.extend(ready());
        for cut in [0, 17, 40, 93, server.len()] {
            let got = run(&client, &server, cut);
            let kinds: Vec<_> = got.iter().map(|e| e.request.kind).collect();
            assert_eq!(kinds, ["startup", "prepare", "execute", "execute"], "cut {cut}");
            assert_eq!(got[1].request.statement.as_deref(), Some("s1"));
            let ok = got[2].response.as_ref().unwrap();
            assert_eq!(got[2].request.params, vec![Cell::Text("7".into())]);
            assert_eq!(
                (ok.rows.clone(), ok.command_tag.as_deref()),
                (vec![vec![Cell::Text("7".into())]], Some("SELECT 1"))
            );
            assert_eq!(ok.columns, vec!["int4".to_string()]);
            let failed = got[3].response.as_ref().unwrap();
            assert_eq!(failed.error.as_ref().map(|e| e.code.as_str()), Some("22P02"));
            assert_eq!(got[3].request.params, vec![Cell::Text("x".into())]);
        }
    }

    #[test]
    fn rows_are_kept_to_the_bound_then_counted_and_ssl_yes_means_raw() {
        let mut client = startup();
        client.extend(msg(b'Q', b"SELECT g\0"));
        let mut server = msg(b'R', &0u32.to_be_bytes());
        server.extend(ready());
        server.extend(row_description(&["g"]));
        for _ in 0..MAX_ROWS + 5 {
            server.extend(data_row(&[Some("1")]));
        }
        server.extend(msg(b'C', b"SELECT 1005\0"));
        server.extend(ready());
        let got = run(&client, &server, 0);
        let r = got[1].response.as_ref().unwrap();
        assert_eq!((r.rows.len(), r.rows_truncated), (MAX_ROWS, 5));

        let mut s = PgSession::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, &[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f], 1, &mut out);
        s.feed(false, b"S\x16\x03\x03", 2, &mut out);
        s.feed(true, b"\x16\x03\x01", 3, &mut out);
        assert!(
            matches!(&out[0], DbOutput::Exchange(e) if matches!(&**e, DbExchange::Pgsql(p) if p.response.as_ref().unwrap().ssl == Some('S')))
        );
        assert_eq!(out[1..], [DbOutput::Raw(0..3)], "TLS bytes after the yes pass on raw");
    }

    /// A session joined mid-stream fed `steps` (client side?, bytes, cut):
    /// the exchanges and the bytes passed on raw.
    fn run_midstream(steps: &[(bool, &[u8], usize)]) -> (Vec<PgExchange>, usize) {
        let s = DbSession::Pgsql(PgSession::midstream(Limits::default()));
        let (got, raw) = crate::protocols::db::testing::feed_cut(s, steps);
        let pg = got.into_iter().map(|e| match e {
            DbExchange::Pgsql(p) => p,
            other => panic!("{other:?}"),
        });
        (pg.collect(), raw)
    }

    #[test]
    fn joined_mid_stream_pairs_from_the_next_request_at_every_split() {
        // The tail of an answer to a request sent before the join.
        let mut old = data_row(&[Some("9")]);
        old.extend(msg(b'C', b"SELECT 2\0"));
        old.extend(ready());
        let q = msg(b'Q', b"SELECT a\0");
        let mut answer = row_description(&["a"]);
        answer.extend(data_row(&[Some("1")]));
        answer.extend(msg(b'C', b"SELECT 1\0"));
        answer.extend(ready());
        // An unnamed extended-protocol unit with one text parameter.
        let mut batch = msg(b'P', b"\0SELECT $1::int\0\0\x01\0\0\0\x17");
        batch.extend(msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x017\0\0"));
        batch.extend(msg(b'D', b"P\0"));
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
        batch.extend(msg(b'S', b""));
        let mut answer2 = msg(b'1', b"");
        answer2.extend(msg(b'2', b""));
        answer2.extend(row_description(&["int4"]));
        answer2.extend(data_row(&[Some("7")]));
        answer2.extend(msg(b'C', b"SELECT 1\0"));
        answer2.extend(ready());
        let longest = [&old, &answer, &batch, &answer2].iter().map(|b| b.len()).max().unwrap();
        for cut in 0..=longest {
            // The first answer's first chunk must show a message header.
            let first = cut.clamp(5, answer.len());
            let steps = [
                (false, &old[..], cut),
                (true, &q[..], q.len()),
                (false, &answer[..], first),
                (true, &batch[..], cut),
                (false, &answer2[..], cut),
            ];
            let (got, raw) = run_midstream(&steps);
            assert_eq!(raw, old.len(), "only the old answer is raw, cut {cut}");
            let brief: Vec<_> = got
                .iter()
                .map(|e| {
                    let r = e.response.as_ref().expect("answered");
                    (e.request.kind, e.request.query.as_str(), r.rows.clone(), r.command_tag.clone())
                })
                .collect();
            let row = |v: &str| vec![vec![Cell::Text(v.into())]];
            assert_eq!(
                brief,
                [
                    ("query", "SELECT a", row("1"), Some("SELECT 1".into())),
                    ("execute", "SELECT $1::int", row("7"), Some("SELECT 1".into())),
                ],
                "cut {cut}"
            );
            assert_eq!(got[1].request.params, vec![Cell::Text("7".into())]);
            assert_eq!((got[0].user.as_deref(), got[0].database.as_deref()), (None, None));
        }
        // A server chunk too short to show a header, or one that does not
        // start the answer to what waits (here: the old tail after the
        // request), is never paired with it: the request goes unanswered
        // and the server's bytes stay raw until the next request's answer.
        for first in [1, 4] {
            let steps = [
                (true, &q[..], q.len()),
                (false, &answer[..], first),
                (true, &batch[..], batch.len()),
                (false, &answer2[..], answer2.len()),
            ];
            let (got, raw) = run_midstream(&steps);
            assert_eq!(raw, answer.len(), "first piece {first}");
            assert!(got[0].response.is_none());
            assert_eq!(got[1].response.as_ref().unwrap().rows, vec![vec![Cell::Text("7".into())]]);
        }
        let (got, raw) = run_midstream(&[(true, &q[..], q.len()), (false, &old[..], old.len())]);
        assert_eq!((got.len(), got[0].response.is_none(), raw), (1, true, old.len()));
    }
}

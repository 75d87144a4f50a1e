//! One MySQL/MariaDB connection: the handshake (user, database; the auth
//! data never kept), then commands answered one at a time: COM_QUERY with
//! text result sets, COM_STMT_PREPARE/EXECUTE with typed parameters and
//! binary rows, OK/ERR/EOF, with or without the deprecate-EOF capability.
//! Compression is not decoded: said (a drop) and the bytes kept raw.

use super::packet::{Framer, Packet, Reader};
use super::resync;
use super::values::{binary, error, text, MyError};
use crate::protocols::db::{Cell, DbExchange, DbOutput};
use crate::protocols::exchange::Limits;
use std::collections::{HashMap, VecDeque};

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyRequest {
    /// `HANDSHAKE`, `COM_QUERY`, `COM_STMT_PREPARE`, `COM_STMT_EXECUTE`, …
    pub command: String,
    /// SQL text (the prepared statement's, for COM_STMT_EXECUTE; the schema for COM_INIT_DB).
    pub query: String,
    /// COM_STMT_EXECUTE's parameters.
    pub params: Vec<Cell>,
    /// The prepared statement's id.
    pub statement_id: Option<u32>,
    /// Time of the packet.
    pub ts: u64,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MyResponse {
    /// Column names of the rows.
    pub columns: Vec<String>,
    /// Rows kept.
    pub rows: Vec<Vec<Cell>>,
    /// Rows not kept.
    pub rows_truncated: u64,
    /// From the OK packet.
    pub affected_rows: Option<u64>,
    /// From the OK packet.
    pub last_insert_id: Option<u64>,
    /// The ERR packet, when it failed.
    pub error: Option<MyError>,
    /// COM_STMT_PREPARE: the statement's id.
    pub statement_id: Option<u32>,
    /// Time of the first packet.
    pub start_ts: u64,
    /// Time of the last.
    pub end_ts: u64,
}

/// A request and its response, with the session's user and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyExchange {
    /// The request.
    pub request: MyRequest,
    /// The response; `None` when the connection ended first.
    pub response: Option<MyResponse>,
    /// From the handshake.
    pub user: Option<String>,
    /// From the handshake or COM_INIT_DB.
    pub database: Option<String>,
}

impl MyExchange {
    /// From the request to the response's last packet.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response.as_ref().map(|r| r.end_ts.saturating_sub(self.request.ts))
    }

    /// The command and SQL (shortened), and the answer in brief.
    pub fn summary(&self) -> (String, String) {
        let sql: String = self.request.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let asked = format!("{} {}", self.request.command, sql.chars().take(80).collect::<String>());
        let answer = match &self.response {
            None => "no response".to_string(),
            Some(r) => match &r.error {
                Some(e) => format!("{} {}", e.code, e.message),
                None if !r.columns.is_empty() => format!("{} rows", r.rows.len() as u64 + r.rows_truncated),
                None => format!("OK {}", r.affected_rows.unwrap_or(0)),
            },
        };
        (asked.trim_end().to_string(), answer)
    }
}

const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
const CLIENT_COMPRESS: u32 = 1 << 5;
const CLIENT_PROTOCOL_41: u32 = 1 << 9;
const CLIENT_SSL: u32 = 1 << 11;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 1 << 21;
const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const SERVER_MORE_RESULTS_EXISTS: u64 = 0x0008;
const UNSIGNED_FLAG: u64 = 0x20;
/// Rows kept per response (and no more than a body's worth of bytes).
pub const MAX_ROWS: usize = 1000;
const MAX_PENDING: usize = 1024;
const MAX_STATEMENTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's greeting.
    Greeting,
    /// Waiting for the client's handshake response.
    Hello,
    /// Authentication packets until OK or ERR.
    Auth,
    /// Commands.
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The answer's first packet.
    First,
    /// `left` column definitions.
    Columns(u64),
    /// The EOF after column definitions (without deprecate-EOF).
    ColumnsEof,
    /// Rows until EOF/OK.
    Rows,
    /// COM_STMT_PREPARE: `params` then `columns` definitions, each block
    /// followed by an EOF without deprecate-EOF.
    Prepare { params: u64, columns: u64, eof: bool },
}

#[derive(Debug)]
struct Pending {
    request: MyRequest,
    response: MyResponse,
    responded: bool,
    reading: Reading,
    binary: bool,
    /// Per column: type and unsigned flag.
    types: Vec<(u8, bool)>,
}

#[derive(Debug, Clone, Default)]
struct Statement {
    query: String,
    params: u16,
    /// Parameter types as last bound (sent with the first execution only).
    types: Vec<(u8, bool)>,
}

/// The state of one MySQL connection.
#[derive(Debug)]
pub struct MySession {
    /// [client, server].
    framers: [Framer; 2],
    phase: Phase,
    caps: u32,
    user: Option<String>,
    database: Option<String>,
    statements: HashMap<u32, Statement>,
    pending: VecDeque<Pending>,
    max_bytes: usize,
    kept_bytes: usize,
    broken: bool,
    /// The client asked for compression: packets after the handshake are
    /// compressed, which is not decoded.
    compressed_after_auth: bool,
    /// Whether result sets end with OK instead of EOF (the deprecate-EOF
    /// capability); `None` joined mid-stream until a result set shows it.
    deprecate_eof: Option<bool>,
    /// Joined mid-stream: the server's bytes are not parsed until a
    /// command waits and a chunk starts an answer.
    await_answer: bool,
    /// The bytes just fed show the client's are not MySQL: said once (with
    /// this many of the client's bytes lost beyond the chunk's direction's),
    /// then raw.
    not_mysql: Option<u64>,
}

fn command_name(c: u8) -> String {
    match c {
        0x01 => "COM_QUIT",
        0x02 => "COM_INIT_DB",
        0x03 => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x0e => "COM_PING",
        0x11 => "COM_CHANGE_USER",
        0x16 => "COM_STMT_PREPARE",
        0x17 => "COM_STMT_EXECUTE",
        0x18 => "COM_STMT_SEND_LONG_DATA",
        0x19 => "COM_STMT_CLOSE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1f => "COM_RESET_CONNECTION",
        other => return format!("COM_{other:#04x}"),
    }
    .to_string()
}

impl MySession {
    /// A session within `limits` (a packet over body + head is skipped).
    pub fn new(limits: Limits) -> Self {
        let max = limits.max_body + limits.max_head;
        Self {
            framers: [Framer::new(max), Framer::new(max)],
            phase: Phase::Greeting,
            caps: 0,
            user: None,
            database: None,
            statements: HashMap::new(),
            pending: VecDeque::new(),
            max_bytes: limits.max_body,
            kept_bytes: 0,
            broken: false,
            compressed_after_auth: false,
            deprecate_eof: None,
            await_answer: false,
            not_mysql: None,
        }
    }

    /// A session joined mid-stream at a chunk that is a command (see
    /// [`resync::request_start`]): the server's bytes count from the first
    /// chunk that starts an answer while a command waits; bytes before it
    /// pass on raw, and commands waiting when a chunk of the server's does
    /// not start an answer are written unanswered, never paired with what
    /// may answer an older one. Whether result sets end with EOF is learnt
    /// from the first one (an EOF after the column definitions).
    pub fn midstream(limits: Limits) -> Self {
        Self { phase: Phase::Command, await_answer: true, ..Self::new(limits) }
    }

    /// True when both directions are between packets.
    pub fn synced(&self) -> bool {
        !self.broken && self.framers.iter().all(Framer::at_boundary)
    }

    /// Feeds bytes of the client (`true`) or server direction.
    pub fn feed(&mut self, client: bool, data: &[u8], ts: u64, out: &mut Vec<DbOutput>) {
        if self.broken {
            out.push(DbOutput::Raw(0..data.len()));
            return;
        }
        if !client && self.await_answer {
            if self.pending.is_empty() || !resync::answer_start(data) {
                self.unanswered(out);
                out.push(DbOutput::Raw(0..data.len()));
                return;
            }
            self.await_answer = false;
        }
        let mut packets = Vec::new();
        let framer = &mut self.framers[usize::from(!client)];
        let carried = framer.in_packet;
        framer.feed(data, &mut |p| packets.push(p));
        for p in packets {
            if client {
                self.on_client(p, ts, out);
            } else {
                self.on_server(p, ts, out);
            }
            if let Some(lost) = self.not_mysql.take() {
                // Bytes from earlier chunks are lost; this one is raw.
                out.push(DbOutput::Drop { reason: "mysql_parse_error", bytes: carried + lost });
                out.push(DbOutput::Raw(0..data.len()));
                return;
            }
            // TLS or compression from the next chunk on: raw.
            if self.broken {
                return;
            }
        }
    }

    /// `len` bytes never came: inside a packet they cost it (counted);
    /// elsewhere pairing stops and the rest is raw.
    pub fn gap(&mut self, client: bool, len: u64, ts: u64, out: &mut Vec<DbOutput>) -> bool {
        let mut packets = Vec::new();
        if !self.broken && self.framers[usize::from(!client)].gap(len, &mut |p| packets.push(p)) {
            for p in packets {
                if client {
                    self.on_client(p, ts, out);
                } else {
                    self.on_server(p, ts, out);
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

    fn give_up(&mut self, out: &mut Vec<DbOutput>) {
        self.broken = true;
        self.unanswered(out);
    }

    /// Writes the commands that wait, with what they got so far.
    fn unanswered(&mut self, out: &mut Vec<DbOutput>) {
        while let Some(p) = self.pending.pop_front() {
            let response = p.responded.then_some(p.response);
            self.emit(out, p.request, response);
        }
    }

    fn emit(&mut self, out: &mut Vec<DbOutput>, request: MyRequest, response: Option<MyResponse>) {
        self.kept_bytes = 0;
        let e = MyExchange { request, response, user: self.user.clone(), database: self.database.clone() };
        out.push(DbOutput::Exchange(Box::new(DbExchange::Mysql(e))));
    }

    fn push(&mut self, request: MyRequest, binary: bool, out: &mut Vec<DbOutput>) {
        if self.pending.len() >= MAX_PENDING {
            out.push(DbOutput::Drop { reason: "mysql_pipeline_over_limit", bytes: 0 });
            if let Some(p) = self.pending.pop_front() {
                self.emit(out, p.request, None);
            }
        }
        self.pending.push_back(Pending {
            request,
            response: MyResponse::default(),
            responded: false,
            reading: Reading::First,
            binary,
            types: Vec::new(),
        });
    }

    fn on_client(&mut self, p: Packet, ts: u64, out: &mut Vec<DbOutput>) {
        let Packet::Whole(seq, body) = p else {
            if let Packet::Skipped(_, len) = p {
                out.push(DbOutput::Drop { reason: "mysql_packet_over_limit", bytes: len });
            }
            return;
        };
        let request = |command: String, query: String| MyRequest {
            command,
            query,
            params: Vec::new(),
            statement_id: None,
            ts,
        };
        match self.phase {
            Phase::Hello => {
                let mut r = Reader(&body);
                self.caps = r.uint(4).unwrap_or(0) as u32;
                // A handshake response is packet 1 of protocol 4.1 (what
                // every server since 4.1 asks for), 32 fixed bytes at least.
                if seq != 1 || self.caps & CLIENT_PROTOCOL_41 == 0 || body.len() < 32 {
                    tracing::debug!("not a MySQL handshake response; the connection's bytes pass on raw");
                    self.not_mysql = Some(0);
                    self.give_up(out);
                    return;
                }
                if self.caps & CLIENT_SSL != 0 && body.len() <= 32 {
                    // TLS follows: its plaintext comes from the TLS probes.
                    self.emit(out, request("SSL_REQUEST".into(), String::new()), None);
                    self.give_up(out);
                    return;
                }
                r.bytes(28); // max packet, charset, filler
                self.user = Some(r.cstr());
                // The auth response is never kept.
                if self.caps & (CLIENT_PLUGIN_AUTH_LENENC | CLIENT_SECURE_CONNECTION) != 0 {
                    if self.caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
                        r.lenenc_bytes();
                    } else {
                        let n = usize::from(r.u8().unwrap_or(0));
                        r.bytes(n);
                    }
                } else {
                    r.cstr();
                }
                if self.caps & CLIENT_CONNECT_WITH_DB != 0 {
                    let db = r.cstr();
                    self.database = (!db.is_empty()).then_some(db);
                }
                self.phase = Phase::Auth;
                self.deprecate_eof = Some(self.caps & CLIENT_DEPRECATE_EOF != 0);
                self.push(request("HANDSHAKE".into(), String::new()), false, out);
                if self.caps & CLIENT_COMPRESS != 0 {
                    out.push(DbOutput::Drop { reason: "mysql_compressed", bytes: 0 });
                    self.compressed_after_auth = true;
                }
            }
            Phase::Command if seq == 0 => {
                let Some((&cmd, rest)) = body.split_first() else { return };
                let name = command_name(cmd);
                match cmd {
                    // No answer comes to these.
                    0x01 | 0x18 => {}
                    0x19 => {
                        let id = Reader(rest).uint(4).unwrap_or(0) as u32;
                        self.statements.remove(&id);
                    }
                    0x17 => {
                        let q = self.execute(rest, ts);
                        self.push(q, true, out);
                    }
                    0x02 | 0x03 | 0x16 => {
                        let q = String::from_utf8_lossy(rest).into_owned();
                        if cmd == 0x02 {
                            self.database = Some(q.clone());
                        }
                        self.push(request(name, q), false, out);
                    }
                    _ => self.push(request(name, String::new()), false, out),
                }
            }
            // Authentication data and LOCAL INFILE contents: never kept.
            _ => {}
        }
    }

    /// A COM_STMT_EXECUTE request with its parameters decoded.
    fn execute(&mut self, body: &[u8], ts: u64) -> MyRequest {
        let mut r = Reader(body);
        let id = r.uint(4).unwrap_or(0) as u32;
        r.bytes(5); // flags, iteration count
        let st = self.statements.entry(id).or_default();
        let n = usize::from(st.params);
        let mut params = Vec::new();
        if n > 0 {
            let nulls = r.bytes(n.div_ceil(8)).unwrap_or_default().to_vec();
            if r.u8() == Some(1) {
                st.types = (0..n).map_while(|_| r.bytes(2).map(|t| (t[0], t[1] & 0x80 != 0))).collect();
            }
            for i in 0..n {
                if nulls.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                    params.push(Cell::Null);
                    continue;
                }
                let (t, unsigned) = st.types.get(i).copied().unwrap_or((253, false));
                let Some(v) = binary(&mut r, t, unsigned) else { break };
                params.push(v);
            }
        }
        MyRequest {
            command: "COM_STMT_EXECUTE".into(),
            query: st.query.clone(),
            params,
            statement_id: Some(id),
            ts,
        }
    }

    fn on_server(&mut self, p: Packet, ts: u64, out: &mut Vec<DbOutput>) {
        let (seq, body) = match p {
            Packet::Whole(seq, body) => (seq, body),
            Packet::Skipped(_, len) => {
                if let Some(front) = self.pending.front_mut() {
                    if front.reading == Reading::Rows {
                        front.response.rows_truncated += 1;
                        return;
                    }
                }
                out.push(DbOutput::Drop { reason: "mysql_packet_over_limit", bytes: len });
                return;
            }
        };
        match self.phase {
            Phase::Greeting => {
                // Protocol 10 greeting: nothing in it names the client.
                self.phase = Phase::Hello;
                return;
            }
            // The server spoke before a handshake response was whole (MariaDB
            // refuses a packet out of order after reading its header alone):
            // the client's bytes held were none.
            Phase::Hello if self.framers[0].in_packet > 0 => {
                self.not_mysql = Some(self.framers[0].in_packet);
                self.give_up(out);
                return;
            }
            Phase::Hello => return,
            Phase::Auth => {
                match body.first() {
                    Some(0x00) => {
                        self.phase = Phase::Command;
                        self.answer(ts, |r| r.affected_rows = None);
                        self.finish(out);
                        if self.compressed_after_auth {
                            self.give_up(out);
                        }
                    }
                    Some(0xff) => {
                        let e = error(&body[1..]);
                        self.answer(ts, |r| r.error = Some(e));
                        self.finish(out);
                    }
                    // Auth switch, more data: the exchange goes on.
                    _ => {}
                }
                return;
            }
            Phase::Command => {}
        }
        let first = body.first().copied();
        // An EOF packet: 0xfe, warnings and status (an OK that ends a
        // result set under deprecate-EOF has at least 7 bytes).
        let eof_packet = first == Some(0xfe) && body.len() == 5;
        if self.deprecate_eof.is_none() {
            // Joined mid-stream: the packet after a block of definitions
            // tells whether EOFs end blocks.
            let after_block = matches!(
                self.pending.front().map(|f| f.reading),
                Some(Reading::ColumnsEof | Reading::Prepare { eof: true, .. })
            );
            if after_block {
                self.deprecate_eof = Some(!eof_packet);
                if !eof_packet {
                    // No EOF: this packet is already the next part (or,
                    // after a whole prepare answer, the next answer).
                    let front = self.pending.front_mut().expect("a front");
                    front.reading = match front.reading {
                        Reading::Prepare { params, columns, .. } => {
                            Reading::Prepare { params, columns, eof: false }
                        }
                        _ => Reading::Rows,
                    };
                    if front.reading == (Reading::Prepare { params: 0, columns: 0, eof: false }) {
                        self.finish(out);
                    }
                    return self.on_server(Packet::Whole(seq, body), ts, out);
                }
            }
        }
        // Unknown only before the first block of definitions ended: an
        // EOF may follow it.
        let deprecate_eof = self.deprecate_eof == Some(true);
        let Some(front) = self.pending.front_mut() else { return };
        if !front.responded {
            front.response.start_ts = ts;
        }
        front.responded = true;
        front.response.end_ts = ts;
        let is_eof = first == Some(0xfe) && body.len() < 0xff_ffff && (body.len() < 9 || deprecate_eof);
        match front.reading {
            Reading::First => match first {
                Some(0x00) if front.request.command == "COM_STMT_PREPARE" => {
                    let mut r = Reader(&body[1..]);
                    let id = r.uint(4).unwrap_or(0) as u32;
                    let columns = r.uint(2).unwrap_or(0);
                    let params = r.uint(2).unwrap_or(0);
                    front.response.statement_id = Some(id);
                    if self.statements.len() >= MAX_STATEMENTS {
                        self.statements.clear();
                    }
                    let query = front.request.query.clone();
                    self.statements.insert(id, Statement { query, params: params as u16, types: Vec::new() });
                    front.reading = Reading::Prepare { params, columns, eof: false };
                    if params == 0 && columns == 0 {
                        self.finish(out);
                    }
                }
                Some(0x00) => {
                    let more = ok_packet(&body, &mut front.response);
                    if !more {
                        self.finish(out);
                    }
                }
                Some(0xff) => {
                    front.response.error = Some(error(&body[1..]));
                    self.finish(out);
                }
                _ => {
                    let n = Reader(&body).lenenc().unwrap_or(0);
                    front.response.columns.clear();
                    front.types.clear();
                    front.reading = Reading::Columns(n);
                }
            },
            Reading::Columns(left) => {
                let (name, t, unsigned) = column_definition(&body);
                front.response.columns.push(name);
                front.types.push((t, unsigned));
                front.reading = match left.saturating_sub(1) {
                    0 if deprecate_eof => Reading::Rows,
                    0 => Reading::ColumnsEof,
                    n => Reading::Columns(n),
                };
            }
            Reading::ColumnsEof => front.reading = Reading::Rows,
            Reading::Rows if first == Some(0xff) => {
                front.response.error = Some(error(&body[1..]));
                self.finish(out);
            }
            Reading::Rows if is_eof => {
                let status = if deprecate_eof {
                    let mut r = Reader(&body[1..]);
                    r.lenenc();
                    r.lenenc();
                    r.uint(2).unwrap_or(0)
                } else {
                    Reader(body.get(3..).unwrap_or_default()).uint(2).unwrap_or(0)
                };
                if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    front.reading = Reading::First;
                } else {
                    self.finish(out);
                }
            }
            Reading::Rows => {
                if front.response.rows.len() >= MAX_ROWS || self.kept_bytes + body.len() > self.max_bytes {
                    front.response.rows_truncated += 1;
                    return;
                }
                self.kept_bytes += body.len();
                let row = if front.binary { binary_row(&body, &front.types) } else { text_row(&body) };
                front.response.rows.push(row);
            }
            Reading::Prepare { params, columns, eof } => {
                // Definitions then (without deprecate-EOF) an EOF per block.
                let (params, columns, eof) = match (params, columns, eof) {
                    (0, 0, _) => (0, 0, false),
                    (p, c, true) => (p, c, false), // this packet was a block's EOF
                    (p, c, false) if p > 0 => (p - 1, c, p == 1 && !deprecate_eof),
                    (_, c, false) => (0, c - 1, c == 1 && !deprecate_eof),
                };
                front.reading = Reading::Prepare { params, columns, eof };
                if params == 0 && columns == 0 && !eof {
                    self.finish(out);
                }
            }
        }
    }

    /// The front request got an answer at `ts`; `set` fills it.
    fn answer(&mut self, ts: u64, set: impl FnOnce(&mut MyResponse)) {
        if let Some(front) = self.pending.front_mut() {
            if !front.responded {
                front.response.start_ts = ts;
            }
            front.responded = true;
            front.response.end_ts = ts;
            set(&mut front.response);
        }
    }

    fn finish(&mut self, out: &mut Vec<DbOutput>) {
        if let Some(p) = self.pending.pop_front() {
            self.emit(out, p.request, Some(p.response));
        }
    }
}

/// Reads an OK packet into `r`; true when more results follow.
fn ok_packet(body: &[u8], r: &mut MyResponse) -> bool {
    let mut rd = Reader(&body[1..]);
    r.affected_rows = rd.lenenc();
    r.last_insert_id = rd.lenenc();
    rd.uint(2).unwrap_or(0) & SERVER_MORE_RESULTS_EXISTS != 0
}

/// A ColumnDefinition41's name, type and unsigned flag.
fn column_definition(body: &[u8]) -> (String, u8, bool) {
    let mut r = Reader(body);
    for _ in 0..4 {
        r.lenenc_bytes(); // catalog, schema, table, org_table
    }
    let name = String::from_utf8_lossy(r.lenenc_bytes().unwrap_or_default()).into_owned();
    r.lenenc_bytes(); // org_name
    r.lenenc(); // length of the fixed fields
    r.bytes(6); // charset, column length
    let t = r.u8().unwrap_or(253);
    let flags = r.uint(2).unwrap_or(0);
    (name, t, flags & UNSIGNED_FLAG != 0)
}

fn text_row(body: &[u8]) -> Vec<Cell> {
    let mut r = Reader(body);
    let mut row = Vec::new();
    while !r.0.is_empty() {
        if r.0[0] == 0xfb {
            r.u8();
            row.push(Cell::Null);
            continue;
        }
        let Some(b) = r.lenenc_bytes() else { break };
        row.push(text(b));
    }
    row
}

fn binary_row(body: &[u8], types: &[(u8, bool)]) -> Vec<Cell> {
    let mut r = Reader(body.get(1..).unwrap_or_default());
    let n = types.len();
    let nulls = r.bytes((n + 7 + 2) / 8).unwrap_or_default().to_vec();
    let mut row = Vec::with_capacity(n);
    for (i, &(t, unsigned)) in types.iter().enumerate() {
        let bit = i + 2;
        if nulls.get(bit / 8).is_some_and(|b| b & (1 << (bit % 8)) != 0) {
            row.push(Cell::Null);
            continue;
        }
        let Some(v) = binary(&mut r, t, unsigned) else { break };
        row.push(v);
    }
    row
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocols::db::DbSession;

    /// A packet: 3-byte length, sequence id, payload.
    pub(crate) fn packet(seq: u8, body: &[u8]) -> Vec<u8> {
        let mut p = (body.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend(body);
        p
    }

    fn column(name: &str, t: u8) -> Vec<u8> {
        let mut b = Vec::new();
        for s in ["def", "shop", "t", "t", name, name] {
            b.push(s.len() as u8);
            b.extend(s.as_bytes());
        }
        b.extend([0x0c, 0x21, 0, 0x0b, 0, 0, 0, t, 0, 0, 0, 0, 0]);
        b
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut b = vec![0xfe, 0, 0];
        b.extend(status.to_le_bytes());
        b
    }

    /// A greeting, a login (user `u`, database `d`), a text query, a
    /// prepared statement with one parameter executed once (binary rows),
    /// an error; without deprecate-EOF. In conversation order: (client?, bytes).
    fn conversation() -> Vec<(bool, Vec<u8>)> {
        let login = {
            let mut b = (CLIENT_CONNECT_WITH_DB | CLIENT_SECURE_CONNECTION | 0x200).to_le_bytes().to_vec();
            b.extend([0; 28]);
            b.extend(b"u\0\x03pwd" as &[u8]);
            b.extend(b"d\0");
            packet(1, &b)
        };
        let mut text = packet(1, &[1]);
        text.extend(packet(2, &column("a", 3)));
        text.extend(packet(3, &eof(2)));
        text.extend(packet(4, &[1, b'7']));
        text.extend(packet(5, &[0xfb]));
        text.extend(packet(6, &eof(2)));
        let mut prepared = packet(1, &[0, 5, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
        prepared.extend(packet(2, &column("?", 253)));
        prepared.extend(packet(3, &eof(2)));
        prepared.extend(packet(4, &column("?", 8)));
        prepared.extend(packet(5, &eof(2)));
        let mut binary = packet(1, &[1]);
        binary.extend(packet(2, &column("?", 8)));
        binary.extend(packet(3, &eof(2)));
        binary.extend(packet(4, &[0, 0, 42, 0, 0, 0, 0, 0, 0, 0]));
        binary.extend(packet(5, &eof(2)));
        vec![
            (false, packet(0, b"\x0a5.5.5-10.11\0\x01\0\0\0abcdefgh\0\xff\xf7")),
            (true, login),
            (false, packet(2, &[0, 0, 0, 2, 0, 0, 0])),
            (true, packet(0, b"\x03SELECT a FROM t")),
            (false, text),
            (true, packet(0, b"\x16SELECT ?")),
            (false, prepared),
            // Execute statement 5: no NULLs, types bound: LONGLONG 42.
            (true, packet(0, &[0x17, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0, 42, 0, 0, 0, 0, 0, 0, 0])),
            (false, binary),
            (true, packet(0, b"\x03SELECT * FROM nope")),
            (false, packet(1, b"\xff\x7a\x04#42S02Table 'd.nope' doesn't exist")),
        ]
    }

    #[test]
    fn a_conversation_at_every_split() {
        let steps = conversation();
        let longest = steps.iter().map(|(_, b)| b.len()).max().unwrap();
        for cut in 0..=longest {
            let mut s = MySession::new(Limits::default());
            let mut out = Vec::new();
            for (client, bytes) in &steps {
                let c = cut.min(bytes.len());
                s.feed(*client, &bytes[..c], 2, &mut out);
                s.feed(*client, &bytes[c..], 3, &mut out);
            }
            s.close(4, &mut out);
            let got: Vec<MyExchange> = out
                .into_iter()
                .map(|o| match o {
                    DbOutput::Exchange(e) => match *e {
                        DbExchange::Mysql(m) => m,
                        other => panic!("{other:?}"),
                    },
                    other => panic!("cut {cut}: {other:?}"),
                })
                .collect();
            let names: Vec<_> = got.iter().map(|e| e.request.command.as_str()).collect();
            assert_eq!(
                names,
                ["HANDSHAKE", "COM_QUERY", "COM_STMT_PREPARE", "COM_STMT_EXECUTE", "COM_QUERY"],
                "cut {cut}"
            );
            assert_eq!((got[0].user.as_deref(), got[0].database.as_deref()), (Some("u"), Some("d")));
            let text = got[1].response.as_ref().unwrap();
            assert_eq!(text.rows, vec![vec![Cell::Text("7".into())], vec![Cell::Null]]);
            assert_eq!(got[2].response.as_ref().unwrap().statement_id, Some(5));
            assert_eq!(
                (got[3].request.query.as_str(), got[3].request.params.clone()),
                ("SELECT ?", vec![Cell::Int(42)])
            );
            assert_eq!(got[3].response.as_ref().unwrap().rows, vec![vec![Cell::Int(42)]]);
            assert_eq!(got[4].response.as_ref().unwrap().error.as_ref().map(|e| e.code), Some(1146));
            assert!(!format!("{got:?}").contains("pwd"), "auth data is never kept");
        }
    }

    /// A session joined mid-stream fed `steps`, each cut at `cut` (the
    /// first answer's first piece at least a header): the exchanges and the
    /// bytes passed on raw.
    fn run_midstream(steps: &[(bool, Vec<u8>)], cut: usize) -> (Vec<MyExchange>, usize) {
        let mut answered = false;
        let cuts: Vec<(bool, &[u8], usize)> = steps
            .iter()
            .enumerate()
            .map(|(i, (client, bytes))| {
                let at = if *client || answered { cut } else { cut.max(4) };
                answered |= !client && i > 0;
                (*client, &bytes[..], at)
            })
            .collect();
        let s = DbSession::Mysql(MySession::midstream(Limits::default()));
        let (got, raw) = crate::protocols::db::testing::feed_cut(s, &cuts);
        let my = got.into_iter().map(|e| match e {
            DbExchange::Mysql(m) => m,
            other => panic!("{other:?}"),
        });
        (my.collect(), raw)
    }

    #[test]
    fn joined_mid_stream_pairs_from_the_next_command_at_every_split() {
        // The end of an answer to a command sent before the join, then the
        // conversation's commands (without deprecate-EOF).
        let old = [packet(4, &[1, b'9']), packet(5, &eof(2))].concat();
        let mut steps = vec![(false, old.clone())];
        steps.extend(conversation().into_iter().skip(3));
        let longest = steps.iter().map(|(_, b)| b.len()).max().unwrap();
        for cut in 0..=longest {
            let (got, raw) = run_midstream(&steps, cut);
            assert_eq!(raw, old.len(), "cut {cut}");
            let names: Vec<_> = got.iter().map(|e| e.request.command.as_str()).collect();
            assert_eq!(
                names,
                ["COM_QUERY", "COM_STMT_PREPARE", "COM_STMT_EXECUTE", "COM_QUERY"],
                "cut {cut}"
            );
            assert_eq!((got[0].user.as_deref(), got[0].database.as_deref()), (None, None));
            let text = got[0].response.as_ref().unwrap();
            assert_eq!(text.rows, vec![vec![Cell::Text("7".into())], vec![Cell::Null]], "cut {cut}");
            assert_eq!(got[1].response.as_ref().unwrap().statement_id, Some(5));
            assert_eq!(
                (got[2].request.query.as_str(), got[2].request.params.clone()),
                ("SELECT ?", vec![Cell::Int(42)])
            );
            assert_eq!(got[2].response.as_ref().unwrap().rows, vec![vec![Cell::Int(42)]], "cut {cut}");
            assert_eq!(got[3].response.as_ref().unwrap().error.as_ref().map(|e| e.code), Some(1146));
        }
        // With deprecate-EOF: no EOF after the definitions, OKs (0xfe, at
        // least 7 bytes) end the result sets; an empty one first, then a
        // prepare whose definitions end the answer.
        let ok_end = |seq: u8| packet(seq, &[0xfe, 0, 0, 2, 0, 0, 0]);
        let empty = [packet(1, &[1]), packet(2, &column("a", 3)), ok_end(3)].concat();
        let rows = [packet(1, &[1]), packet(2, &column("a", 3)), packet(3, &[1, b'7']), ok_end(4)].concat();
        let prepared =
            [packet(1, &[0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), packet(2, &column("a", 3))].concat();
        let steps = vec![
            (true, packet(0, b"\x03SELECT a FROM t WHERE 0")),
            (false, empty),
            (true, packet(0, b"\x03SELECT a FROM t")),
            (false, rows),
            (true, packet(0, b"\x16SELECT a FROM t")),
            (false, prepared),
            (true, packet(0, b"\x0e")),
            (false, packet(1, &[0, 0, 0, 2, 0, 0, 0])),
        ];
        for cut in 0..=40 {
            let (got, raw) = run_midstream(&steps, cut);
            assert_eq!(raw, 0);
            let brief: Vec<_> = got
                .iter()
                .map(|e| (e.request.command.as_str(), e.response.as_ref().map(|r| r.rows.len())))
                .collect();
            assert_eq!(
                brief,
                [
                    ("COM_QUERY", Some(0)),
                    ("COM_QUERY", Some(1)),
                    ("COM_STMT_PREPARE", Some(0)),
                    ("COM_PING", Some(0))
                ],
                "cut {cut}"
            );
            assert_eq!(got[0].response.as_ref().unwrap().columns, ["a"]);
        }
        // An old answer's tail after the command is never paired with it.
        let steps = vec![(true, packet(0, b"\x03SELECT 1")), (false, old.clone())];
        let (got, raw) = run_midstream(&steps, 100);
        assert_eq!((got.len(), got[0].response.is_none(), raw), (1, true, old.len()));
    }

    #[test]
    fn bytes_that_are_no_handshake_response_are_a_counted_drop_then_raw() {
        let greeting = conversation().remove(0).1;
        for garbage in [packet(7, b"junk"), packet(1, b"\x05\0\0\0short"), packet(1, &[0; 40])] {
            let mut s = MySession::new(Limits::default());
            let mut out = Vec::new();
            s.feed(false, &greeting, 1, &mut out);
            // The head in one chunk, the rest in the next.
            s.feed(true, &garbage[..2], 2, &mut out);
            s.feed(true, &garbage[2..], 3, &mut out);
            s.feed(false, &packet(2, b"\xff\x13\x04Bad handshake"), 4, &mut out);
            s.close(5, &mut out);
            assert_eq!(
                out,
                [
                    DbOutput::Drop { reason: "mysql_parse_error", bytes: 2 },
                    DbOutput::Raw(0..garbage.len() - 2),
                    DbOutput::Raw(0..20),
                ],
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_refusal_after_a_head_that_is_no_handshake_response_counts_it() {
        let greeting = conversation().remove(0).1;
        let refusal = packet(2, b"\xff\x84\x04#08S01Got packets out of order");
        let mut s = MySession::new(Limits::default());
        let mut out = Vec::new();
        s.feed(false, &greeting, 1, &mut out);
        s.feed(true, &[4, 0, 0, 7], 2, &mut out);
        s.feed(false, &refusal, 3, &mut out);
        s.close(4, &mut out);
        assert_eq!(
            out,
            [DbOutput::Drop { reason: "mysql_parse_error", bytes: 4 }, DbOutput::Raw(0..refusal.len())]
        );
    }
}

//! One Redis connection: commands paired with replies in order (pipelining
//! is a queue), subscription replies gathered by their command, pub/sub
//! messages and RESP3 pushes written on their own, passwords never kept.

use super::resp::{Agg, Blob, Parsed, RespLimits, RespParser, Value};
use crate::protocols::db::{DbExchange, DbOutput};
use crate::protocols::exchange::Limits;
use std::collections::VecDeque;

/// A command: its name (upper-cased) and arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// `GET`, `SET`, `CLIENT`… (upper-cased as Redis matches it).
    pub name: String,
    /// Arguments after the name, secrets replaced by [`REDACTED`].
    pub args: Vec<Blob>,
    /// Arguments not kept (over the budget).
    pub args_omitted: u64,
}

/// What replaces a password.
pub const REDACTED: &[u8] = b"REDACTED";

/// A command with its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// First byte's time.
    pub start_ts: u64,
    /// Last byte's time.
    pub end_ts: u64,
}

/// A reply with its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The value (several subscription replies: an array of them).
    pub value: Value,
    /// First byte's time.
    pub start_ts: u64,
    /// Last byte's time.
    pub end_ts: u64,
}

/// A command and its reply, or a push on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisExchange {
    /// The command; `None` for pushes and replies nothing asked for.
    pub request: Option<Request>,
    /// The reply; `None` when the connection ended first.
    pub response: Option<Reply>,
}

impl RedisExchange {
    /// From the command's first byte to the reply's last.
    pub fn latency_ns(&self) -> Option<u64> {
        match (&self.request, &self.response) {
            (Some(q), Some(r)) => Some(r.end_ts.saturating_sub(q.start_ts)),
            _ => None,
        }
    }
}

impl RedisExchange {
    /// The command with its first arguments, and the reply in brief.
    pub fn summary(&self) -> (String, String) {
        let asked = match &self.request {
            Some(q) => {
                let mut line = q.command.name.clone();
                for a in &q.command.args {
                    if line.len() > 60 {
                        line.push_str(" …");
                        break;
                    }
                    line.push(' ');
                    line.push_str(&String::from_utf8_lossy(&a.data));
                }
                line
            }
            None => "(push)".to_string(),
        };
        let answer = match self.response.as_ref().map(|r| &r.value) {
            None => "no reply".to_string(),
            Some(Value::Simple(b) | Value::Error(b) | Value::BulkError(b)) => {
                String::from_utf8_lossy(&b.data).chars().take(60).collect()
            }
            Some(Value::Integer(n)) => n.to_string(),
            Some(Value::Bulk(b) | Value::Verbatim(b)) => format!("{} B", b.data.len() as u64 + b.truncated),
            Some(Value::Null) => "nil".to_string(),
            Some(Value::Boolean(b)) => b.to_string(),
            Some(Value::Double(t) | Value::BigNumber(t)) => t.clone(),
            Some(v @ (Value::Array(a) | Value::Set(a) | Value::Map(a) | Value::Push(a))) => {
                format!("{} of {}", v.type_name(), a.items.len() as u64 + a.omitted)
            }
        };
        (asked, answer)
    }
}

/// Commands waiting for replies, at most (a pipeline deeper than this
/// loses its oldest pairings, counted).
const MAX_PENDING: usize = 4096;

#[derive(Debug)]
struct Pending {
    request: Request,
    /// Subscription commands: the reply kind they get, and how many.
    subscription: Option<(&'static str, usize)>,
    replies: Vec<Parsed>,
}

/// The state of one Redis connection.
#[derive(Debug)]
pub struct RedisSession {
    parsers: [RespParser; 2],
    pending: VecDeque<Pending>,
    /// RESP2 subscribed mode: `message` arrays are pushes.
    subscribed: bool,
    /// A direction stopped parsing: its bytes pass on raw, nothing pairs.
    broken: bool,
    /// Joined mid-stream: replies are not parsed until a command was seen
    /// (they may answer commands sent before the join, or start mid-reply).
    await_command: bool,
}

const SUBSCRIPTIONS: [(&str, &str); 6] = [
    ("SUBSCRIBE", "subscribe"),
    ("PSUBSCRIBE", "psubscribe"),
    ("SSUBSCRIBE", "ssubscribe"),
    ("UNSUBSCRIBE", "unsubscribe"),
    ("PUNSUBSCRIBE", "punsubscribe"),
    ("SUNSUBSCRIBE", "sunsubscribe"),
];

impl RedisSession {
    /// A session within `limits`: a message keeps at most a body's worth
    /// of bytes plus a head's (so a value of the body bound is kept whole
    /// beside its command and key).
    pub fn new(limits: Limits) -> Self {
        let limits = RespLimits { max_bytes: limits.max_body + limits.max_head, ..RespLimits::default() };
        Self {
            parsers: [RespParser::new(limits, true), RespParser::new(limits, false)],
            pending: VecDeque::new(),
            subscribed: false,
            broken: false,
            await_command: false,
        }
    }

    /// A session joined mid-stream at a command's first byte: replies count
    /// from the first reply chunk after a command.
    pub fn midstream(limits: Limits) -> Self {
        Self { await_command: true, ..Self::new(limits) }
    }

    /// True when both directions are between messages.
    pub fn synced(&self) -> bool {
        !self.broken && self.parsers.iter().all(RespParser::at_boundary)
    }

    /// Feeds bytes of the command (`true`) or reply direction.
    pub fn feed(&mut self, request_side: bool, data: &[u8], ts: u64, out: &mut Vec<DbOutput>) {
        if self.broken || (!request_side && self.await_command && self.pending.is_empty()) {
            out.push(DbOutput::Raw(0..data.len()));
            return;
        }
        if !request_side {
            self.await_command = false;
        }
        let mut parsed = Vec::new();
        let parser = &mut self.parsers[usize::from(!request_side)];
        let carried = parser.in_message;
        let result = parser.feed(data, ts, &mut |p| parsed.push(p));
        for p in parsed {
            if request_side {
                self.on_command(p, out);
            } else {
                self.on_reply(p, out);
            }
        }
        if let Err((at, e)) = result {
            tracing::debug!(error = %e, "RESP parse error; the connection's bytes pass on raw");
            // The failed message's bytes from earlier chunks are lost; from
            // this chunk on everything is kept raw.
            let earlier = if at == 0 { carried } else { 0 };
            out.push(DbOutput::Drop { reason: "redis_parse_error", bytes: earlier });
            out.push(DbOutput::Raw(at..data.len()));
            self.give_up(out);
        }
    }

    /// `len` bytes of a direction never came. Inside a bulk string they are
    /// counted in its value (true); elsewhere pairing cannot be trusted
    /// after them, so what waits is written unanswered and the rest is raw.
    pub fn gap(&mut self, request_side: bool, len: u64, _ts: u64, out: &mut Vec<DbOutput>) -> bool {
        if !self.broken && self.parsers[usize::from(!request_side)].gap(len) {
            return true;
        }
        self.give_up(out);
        false
    }

    /// The connection ended: commands still waiting are written unanswered.
    pub fn close(&mut self, _ts: u64, out: &mut Vec<DbOutput>) {
        self.give_up(out);
    }

    fn give_up(&mut self, out: &mut Vec<DbOutput>) {
        self.broken = true;
        while let Some(p) = self.pending.pop_front() {
            let response = gathered(p.replies);
            emit(out, Some(p.request), response);
        }
    }

    fn on_command(&mut self, p: Parsed, out: &mut Vec<DbOutput>) {
        let command = command(p.value);
        let subscription = SUBSCRIPTIONS.iter().find(|(c, _)| *c == command.name).map(|&(_, kind)| {
            // Each channel named gets a reply; none named: one per subscription held.
            (kind, command.args.len())
        });
        if self.pending.len() >= MAX_PENDING {
            let oldest = self.pending.pop_front().expect("full");
            out.push(DbOutput::Drop { reason: "redis_pipeline_over_limit", bytes: 0 });
            emit(out, Some(oldest.request), None);
        }
        let request = Request { command, start_ts: p.start_ts, end_ts: p.end_ts };
        self.pending.push_back(Pending { request, subscription, replies: Vec::new() });
    }

    fn on_reply(&mut self, p: Parsed, out: &mut Vec<DbOutput>) {
        let kind = kind_word(&p.value);
        if let Some(front) = self.pending.front_mut() {
            if let Some((want, n)) = front.subscription {
                if kind.as_deref() == Some(want) {
                    let left = subscription_count(&p.value);
                    self.subscribed = left.is_some_and(|c| c > 0);
                    front.replies.push(p);
                    // With no channel named, replies come until none is held.
                    if (n > 0 && front.replies.len() >= n) || (n == 0 && left == Some(0)) {
                        let done = self.pending.pop_front().expect("front");
                        emit(out, Some(done.request), gathered(done.replies));
                    }
                    return;
                }
                if n == 0 && !front.replies.is_empty() {
                    // An unsubscribe-all's replies ended.
                    let done = self.pending.pop_front().expect("front");
                    emit(out, Some(done.request), gathered(done.replies));
                    return self.on_reply(p, out);
                }
            }
        }
        let message = matches!(kind.as_deref(), Some("message" | "pmessage" | "smessage"));
        if matches!(p.value, Value::Push(_)) || (self.subscribed && message) {
            return emit(out, None, Some(reply(p)));
        }
        match self.pending.pop_front() {
            Some(q) => emit(out, Some(q.request), Some(reply(p))),
            // Nothing asked (MONITOR's stream, a reply to an unseen command).
            None => emit(out, None, Some(reply(p))),
        }
    }
}

fn reply(p: Parsed) -> Reply {
    Reply { value: p.value, start_ts: p.start_ts, end_ts: p.end_ts }
}

/// Subscription replies as one: the reply itself, or an array of several.
fn gathered(mut replies: Vec<Parsed>) -> Option<Reply> {
    match replies.len() {
        0 => None,
        1 => replies.pop().map(reply),
        _ => {
            let (start_ts, end_ts) = (replies[0].start_ts, replies[replies.len() - 1].end_ts);
            let items = replies.into_iter().map(|p| p.value).collect();
            Some(Reply { value: Value::Array(Agg { items, omitted: 0 }), start_ts, end_ts })
        }
    }
}

fn emit(out: &mut Vec<DbOutput>, request: Option<Request>, response: Option<Reply>) {
    out.push(DbOutput::Exchange(Box::new(DbExchange::Redis(RedisExchange { request, response }))));
}

/// The first item of an array or push, lower-cased: a pub/sub reply's kind.
fn kind_word(v: &Value) -> Option<String> {
    let first = v.items()?.first()?.bytes()?;
    Some(String::from_utf8_lossy(first).to_ascii_lowercase())
}

/// The subscription count a (un)subscribe reply ends with.
fn subscription_count(v: &Value) -> Option<i64> {
    match v.items()?.get(2)? {
        Value::Integer(n) => Some(*n),
        _ => None,
    }
}

/// A command from the array a client sent, secrets replaced.
fn command(v: Value) -> Command {
    let (mut items, omitted) = match v {
        Value::Array(Agg { items, omitted }) => (items, omitted),
        other => (vec![other], 0),
    };
    let name = if items.is_empty() {
        String::new()
    } else {
        let first = items.remove(0);
        String::from_utf8_lossy(first.bytes().unwrap_or_default()).to_ascii_uppercase()
    };
    let mut args: Vec<Blob> = items
        .into_iter()
        .map(|v| match v {
            Value::Bulk(b) | Value::Simple(b) => b,
            Value::Integer(n) => Blob::new(n.to_string().as_bytes()),
            _ => Blob::default(),
        })
        .collect();
    redact(&name, &mut args);
    Command { name, args, args_omitted: omitted }
}

/// Positions of password arguments, by command, replaced.
fn redact(name: &str, args: &mut [Blob]) {
    let upper = |b: &Blob| String::from_utf8_lossy(&b.data).to_ascii_uppercase();
    let mut secret = vec![false; args.len()];
    let mut mark = |i: usize| {
        if let Some(s) = secret.get_mut(i) {
            *s = true;
        }
    };
    match name {
        // AUTH [username] password
        "AUTH" => (0..args.len()).for_each(&mut mark),
        // HELLO [protover [AUTH username password] …]; MIGRATE … AUTH password | AUTH2 username password
        "HELLO" | "MIGRATE" => {
            for (i, a) in args.iter().enumerate() {
                match upper(a).as_str() {
                    "AUTH" if name == "HELLO" => mark(i + 2),
                    "AUTH" => mark(i + 1),
                    "AUTH2" => mark(i + 2),
                    _ => {}
                }
            }
        }
        // CONFIG SET requirepass|masterauth value …
        "CONFIG" if args.first().map(upper).as_deref() == Some("SET") => {
            for (i, a) in args.iter().enumerate().skip(1).step_by(2) {
                if matches!(upper(a).as_str(), "REQUIREPASS" | "MASTERAUTH") {
                    mark(i + 1);
                }
            }
        }
        // ACL SETUSER name >password #hash
        "ACL" => {
            for (i, a) in args.iter().enumerate() {
                if matches!(a.data.first(), Some(b'>' | b'<' | b'#' | b'!')) {
                    mark(i);
                }
            }
        }
        _ => {}
    }
    for (a, s) in args.iter_mut().zip(secret) {
        if s {
            *a = Blob::new(REDACTED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(steps: &[(bool, &[u8])]) -> (Vec<RedisExchange>, Vec<DbOutput>) {
        let mut s = RedisSession::new(Limits::default());
        let mut out = Vec::new();
        for (i, (req, bytes)) in steps.iter().enumerate() {
            s.feed(*req, bytes, i as u64 * 10, &mut out);
        }
        s.close(1000, &mut out);
        let mut exchanges = Vec::new();
        let mut rest = Vec::new();
        for o in out {
            match o {
                DbOutput::Exchange(e) => match *e {
                    DbExchange::Redis(r) => exchanges.push(r),
                    #[allow(unreachable_patterns)]
                    other => panic!("{other:?}"),
                },
                o => rest.push(o),
            }
        }
        (exchanges, rest)
    }

    fn cmd(e: &RedisExchange) -> (String, Vec<String>) {
        let c = &e.request.as_ref().unwrap().command;
        (c.name.clone(), c.args.iter().map(|a| String::from_utf8_lossy(&a.data).into_owned()).collect())
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(Blob::new(s.as_bytes()))
    }

    #[test]
    fn a_pipeline_pairs_in_order() {
        let (ex, rest) = run(&[
            (true, b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"),
            (false, b"+OK\r\n$1\r\nv\r\n"),
            (false, b"+PONG\r\n"),
        ]);
        assert!(rest.is_empty(), "{rest:?}");
        let names: Vec<_> = ex.iter().map(cmd).collect();
        assert_eq!(names[0], ("SET".into(), vec!["k".into(), "v".into()]));
        assert_eq!(names[1], ("GET".into(), vec!["k".into()]));
        assert_eq!(ex[1].response.as_ref().unwrap().value, bulk("v"));
        assert_eq!(ex[2].response.as_ref().unwrap().value, Value::Simple(Blob::new(b"PONG")));
        assert_eq!((ex[0].latency_ns(), ex[2].latency_ns()), (Some(10), Some(20)));
    }

    #[test]
    fn subscriptions_gather_their_replies_and_messages_are_pushes() {
        let (ex, _) = run(&[
            (true, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n"),
            (false, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
            (false, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
            (true, b"*1\r\n$11\r\nUNSUBSCRIBE\r\n"),
            (
                false,
                b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n",
            ),
            (true, b"*3\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n"),
            (false, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
        ]);
        assert_eq!(ex.len(), 4, "{ex:#?}");
        assert_eq!(cmd(&ex[0]).0, "SUBSCRIBE");
        let Value::Array(both) = &ex[0].response.as_ref().unwrap().value else { panic!() };
        assert_eq!(both.items.len(), 2);
        assert!(ex[1].request.is_none());
        assert_eq!(ex[1].response.as_ref().unwrap().value.items().unwrap()[2], bulk("hi"));
        assert_eq!(cmd(&ex[2]).0, "UNSUBSCRIBE");
        // Unsubscribed: an array that looks like a message answers LRANGE.
        assert_eq!(cmd(&ex[3]).0, "LRANGE");
    }

    #[test]
    fn resp3_pushes_stand_alone_and_subscribe_pushes_answer_subscribe() {
        let (ex, _) = run(&[
            (true, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
            (false, b"%1\r\n+proto\r\n:3\r\n"),
            (true, b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
            (false, b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n_\r\n"),
        ]);
        let kinds: Vec<_> = ex.iter().map(|e| e.request.as_ref().map(|r| r.command.name.as_str())).collect();
        assert_eq!(kinds, vec![Some("HELLO"), Some("SUBSCRIBE"), None, Some("GET")]);
        assert_eq!(ex[3].response.as_ref().unwrap().value, Value::Null);
    }

    #[test]
    fn passwords_never_stay() {
        let (ex, _) = run(&[
            (true, b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$6\r\nsecret\r\n"),
            (true, b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$2\r\npw\r\n"),
            (true, b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n"),
            (true, b"*4\r\n$3\r\nACL\r\n$7\r\nSETUSER\r\n$1\r\nu\r\n$3\r\n>pw\r\n"),
            (true, b"AUTH inline-secret\r\n"),
        ]);
        let args: Vec<_> = ex.iter().map(|e| cmd(e).1).collect();
        assert_eq!(args[0], ["REDACTED", "REDACTED"]);
        assert_eq!(args[1], ["3", "AUTH", "u", "REDACTED"]);
        assert_eq!(args[2], ["SET", "requirepass", "REDACTED"]);
        assert_eq!(args[3], ["SETUSER", "u", "REDACTED"]);
        assert_eq!(args[4], ["REDACTED"]);
        assert!(ex.iter().all(|e| e.response.is_none()));
    }

    #[test]
    fn joined_mid_stream_replies_count_from_the_first_command() {
        let mut s = RedisSession::midstream(Limits::default());
        let mut out = Vec::new();
        // The tail of a reply to a command sent before the join.
        s.feed(false, b"lue\r\n", 1, &mut out);
        assert_eq!(out, vec![DbOutput::Raw(0..5)]);
        out.clear();
        s.feed(true, b"*1\r\n$4\r\nPING\r\n", 2, &mut out);
        s.feed(false, b"+PONG\r\n", 3, &mut out);
        let [DbOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
        let DbExchange::Redis(e) = &**e else { panic!() };
        assert_eq!(e.response.as_ref().unwrap().value, Value::Simple(Blob::new(b"PONG")));
    }

    #[test]
    fn garbage_after_a_good_start_is_counted_and_kept_raw() {
        let (ex, rest) = run(&[
            (true, b"*1\r\n$4\r\nPING\r\n"),
            (false, b"+PONG\r\n"),
            (true, b"*1\r\n$4\r\nPI"),
            (true, b"NGxx"),
        ]);
        assert_eq!(ex.len(), 1);
        assert_eq!(
            rest,
            vec![DbOutput::Drop { reason: "redis_parse_error", bytes: 10 }, DbOutput::Raw(0..4)]
        );
    }
}

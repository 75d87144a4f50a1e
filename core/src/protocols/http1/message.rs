//! One direction of HTTP/1.x, sans IO. `advance` takes bytes and returns how
//! many it consumed and at most one event, so the caller can change the
//! context (is the pending request a HEAD?) between pipelined messages.

use crate::protocols::exchange::{Head, Limits, Message, Version};
use crate::protocols::spare;

/// Which start line this direction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// Why the bytes are not HTTP/1.x.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The head does not parse.
    #[error("invalid HTTP/1 head: {0}")]
    Head(String),
    /// The head is larger than allowed.
    #[error("HTTP/1 head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// Bad chunked framing.
    #[error("invalid chunked encoding")]
    Chunked,
    /// Content-Length is not a number.
    #[error("invalid Content-Length")]
    ContentLength,
}

/// What `advance` produced. The message is in the box the parser took from
/// the spares: it moves on as a pointer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A message ended.
    Message(Box<Message>),
    /// The bytes are not HTTP: the parser now waits for `resync`.
    Error(ParseError),
}

#[derive(Debug)]
enum Chunk {
    Size(Vec<u8>),
    Data(u64),
    DataEnd(u8),
    Trailer(Vec<u8>),
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Framing),
    /// Lost sync (bad bytes or a gap): skip until a chunk starts a message.
    Resync,
    /// After an upgrade (101, CONNECT): the rest is not HTTP.
    Upgraded,
}

/// Parser of one direction.
#[derive(Debug)]
pub struct MessageParser {
    kind: Kind,
    limits: Limits,
    state: State,
    buf: Vec<u8>,
    /// The message being parsed, in the box it leaves in: taken from the
    /// spares when a message starts, so an idle connection holds no
    /// buffers (`current`).
    msg: Option<Box<Message>>,
    /// Bytes of the current body went missing: what follows is counted,
    /// not kept, so the kept body stays a true prefix of what was sent.
    body_hole: bool,
    /// The current head names a content encoding (to undo when it ends).
    encoded: bool,
}

const MAX_HEADERS: usize = 128;

impl MessageParser {
    /// A parser for `kind` messages.
    pub fn new(kind: Kind, limits: Limits) -> Self {
        Self {
            kind,
            limits,
            state: State::Head,
            buf: Vec::new(),
            msg: None,
            body_hole: false,
            encoded: false,
        }
    }

    /// True after an upgrade: the caller treats the rest as raw bytes.
    pub fn upgraded(&self) -> bool {
        matches!(self.state, State::Upgraded)
    }

    /// True while the parser waits for a message start.
    pub fn resyncing(&self) -> bool {
        matches!(self.state, State::Resync)
    }

    /// True between messages (nothing partial held).
    pub fn idle(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// The rest of this direction is not HTTP.
    pub fn upgrade(&mut self) {
        self.state = State::Upgraded;
        self.buf.clear();
    }

    /// Bytes went missing: drop the partial message and wait for the next start.
    pub fn lose_sync(&mut self) {
        self.state = State::Resync;
        self.buf.clear();
        self.msg = None;
        self.body_hole = false;
        self.encoded = false;
    }

    /// `len` bytes went missing inside the body being read: when its framing
    /// says they were all body bytes (a length or chunk with at least that
    /// many left, or a body that lasts until close), they are counted as not
    /// kept and parsing goes on in sync: `Some`, with the message when the
    /// hole ended it. `None`: the caller loses sync.
    pub fn absorb_gap(&mut self, len: u64, ts: u64) -> Option<Option<Event>> {
        let State::Body(framing) = &mut self.state else { return None };
        let mut done = false;
        match framing {
            Framing::UntilClose => {}
            Framing::Length(left) if len <= *left => {
                *left -= len;
                done = *left == 0;
            }
            Framing::Chunked(chunk) => match chunk {
                Chunk::Data(left) if len <= *left => {
                    *left -= len;
                    if *left == 0 {
                        *chunk = Chunk::DataEnd(0);
                    }
                }
                _ => return None,
            },
            _ => return None,
        }
        let m = current(&mut self.msg);
        m.body_truncated += len;
        m.end_ts = ts;
        self.body_hole = true;
        if done {
            self.state = State::Head;
            return Some(Some(Event::Message(self.complete())));
        }
        Some(None)
    }

    /// In resync, whether `chunk_start` begins a message; if so the parser
    /// takes it from there.
    pub fn resync(&mut self, chunk_start: &[u8]) -> bool {
        use super::super::{classify, Classification as C};
        let ok = matches!(
            (self.kind, classify(chunk_start)),
            (Kind::Request, C::Http1Request) | (Kind::Response, C::Http1Response)
        );
        if ok {
            self.state = State::Head;
        }
        ok
    }

    /// Consumes a prefix of `data` (chunk time `ts`) and returns its length and
    /// at most one event. `request_was_head`: for responses, whether the request
    /// this response answers was HEAD (its body is then empty whatever the headers say).
    pub fn advance(&mut self, data: &[u8], ts: u64, request_was_head: bool) -> (usize, Option<Event>) {
        match &mut self.state {
            State::Resync | State::Upgraded => (data.len(), None),
            State::Head => self.head(data, ts, request_was_head),
            State::Body(_) => self.body(data, ts),
        }
    }

    /// The connection ended: a body delimited by the close is complete.
    pub fn finish(&mut self, ts: u64) -> Option<Box<Message>> {
        if let State::Body(Framing::UntilClose) = self.state {
            let m = current(&mut self.msg);
            m.end_ts = m.end_ts.max(ts);
            self.state = State::Head;
            return Some(self.complete());
        }
        None
    }

    fn head(&mut self, data: &[u8], ts: u64, request_was_head: bool) -> (usize, Option<Event>) {
        // Blank lines between messages are allowed (RFC 9112 §2.2).
        if self.buf.is_empty() {
            let skip = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            if skip > 0 {
                return (skip, None);
            }
            // A spare, emptied: no field of an earlier message is in it.
            current(&mut self.msg).start_ts = ts;
        }
        let before = self.buf.len();
        let take = data.len().min(self.limits.max_head + 1 - before.min(self.limits.max_head));
        // A head that arrives whole in one chunk (the usual case) is parsed
        // where it lies; only a head split across chunks is gathered.
        let head = &mut current(&mut self.msg).head;
        let parsed = if before == 0 {
            parse_head(self.kind, &data[..take], head)
        } else {
            self.buf.extend_from_slice(&data[..take]);
            parse_head(self.kind, &self.buf, head)
        };
        match parsed {
            Err(e) => self.fail(ParseError::Head(e.to_string()), take),
            Ok(None) => {
                if before == 0 {
                    self.buf.extend_from_slice(&data[..take]);
                }
                if self.buf.len() > self.limits.max_head {
                    return self.fail(ParseError::HeadTooLarge(self.limits.max_head), take);
                }
                (take, None)
            }
            Ok(Some(n)) => {
                let consumed = n - before;
                self.buf.clear();
                current(&mut self.msg).end_ts = ts;
                match self.framing(request_was_head) {
                    Err(e) => self.fail(e, consumed),
                    Ok(None) => {
                        let upgrade = self.is_upgrade();
                        self.state = if upgrade { State::Upgraded } else { State::Head };
                        (consumed, Some(Event::Message(self.complete())))
                    }
                    Ok(Some(f)) => {
                        self.state = State::Body(f);
                        (consumed, None)
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: ParseError, consumed: usize) -> (usize, Option<Event>) {
        self.lose_sync();
        (consumed, Some(Event::Error(e)))
    }

    /// 101 Switching Protocols, or a 2xx answer to CONNECT (seen by the response side).
    fn is_upgrade(&self) -> bool {
        self.kind == Kind::Response && self.msg.as_ref().is_some_and(|m| m.head.status == 101)
    }

    /// How the body is delimited (RFC 9112 §6.3); `None` when there is no
    /// body. Notes whether the head names a content encoding on the way.
    fn framing(&mut self, request_was_head: bool) -> Result<Option<Framing>, ParseError> {
        let h = &current(&mut self.msg).head;
        // One pass over the names as bytes; one is compared only when its
        // length fits, and only those fields' values are read.
        let (mut chunked, mut length, mut encoded) = (false, None, false);
        let value = |i| h.headers.get(i).map_or("", |(_, v)| v);
        for (i, n) in h.headers.names().enumerate() {
            match n.len() {
                17 if n.eq_ignore_ascii_case(b"transfer-encoding") => {
                    chunked |= value(i).split(',').any(|t| t.trim().eq_ignore_ascii_case("chunked"))
                }
                16 if n.eq_ignore_ascii_case(b"content-encoding") => encoded = true,
                14 if length.is_none() && n.eq_ignore_ascii_case(b"content-length") => {
                    length = Some(value(i))
                }
                _ => {}
            }
        }
        self.encoded = encoded;
        if self.kind == Kind::Response
            && (request_was_head || (100..200).contains(&h.status) || h.status == 204 || h.status == 304)
        {
            return Ok(None);
        }
        if chunked {
            return Ok(Some(Framing::Chunked(Chunk::Size(Vec::new()))));
        }
        if let Some(v) = length {
            let n: u64 = v.trim().parse().map_err(|_| ParseError::ContentLength)?;
            return Ok(if n == 0 { None } else { Some(Framing::Length(n)) });
        }
        Ok(match self.kind {
            Kind::Request => None,
            Kind::Response => Some(Framing::UntilClose),
        })
    }

    fn keep(&mut self, bytes: &[u8]) {
        let m = current(&mut self.msg);
        let room = if self.body_hole { 0 } else { self.limits.max_body.saturating_sub(m.body.len()) };
        let n = room.min(bytes.len());
        m.body.extend_from_slice(&bytes[..n]);
        m.body_truncated += (bytes.len() - n) as u64;
    }

    fn body(&mut self, data: &[u8], ts: u64) -> (usize, Option<Event>) {
        current(&mut self.msg).end_ts = ts;
        let State::Body(framing) = &mut self.state else { unreachable!() };
        match framing {
            Framing::UntilClose => {
                self.keep(data);
                (data.len(), None)
            }
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                *left -= n as u64;
                let done = *left == 0;
                self.keep(&data[..n]);
                if done {
                    self.state = State::Head;
                    return (n, Some(Event::Message(self.complete())));
                }
                (n, None)
            }
            Framing::Chunked(chunk) => match chunk {
                Chunk::Size(line) => match line_end(line, data) {
                    None => (data.len(), None),
                    Some(used) => {
                        let size = parse_chunk_size(line);
                        match size {
                            None => self.fail(ParseError::Chunked, used),
                            Some(0) => {
                                *chunk = Chunk::Trailer(Vec::new());
                                (used, None)
                            }
                            Some(n) => {
                                *chunk = Chunk::Data(n);
                                (used, None)
                            }
                        }
                    }
                },
                Chunk::Data(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        *chunk = Chunk::DataEnd(0);
                    }
                    self.keep(&data[..n]);
                    (n, None)
                }
                Chunk::DataEnd(seen) => {
                    let want = *b"\r\n";
                    let mut used = 0;
                    while (*seen as usize) < 2 && used < data.len() {
                        if data[used] != want[*seen as usize] {
                            return self.fail(ParseError::Chunked, used);
                        }
                        *seen += 1;
                        used += 1;
                    }
                    if *seen == 2 {
                        *chunk = Chunk::Size(Vec::new());
                    }
                    (used, None)
                }
                Chunk::Trailer(line) => match line_end(line, data) {
                    None => (data.len(), None),
                    Some(used) => {
                        let trailer = std::mem::take(line);
                        let text = String::from_utf8_lossy(trailer.trim_ascii_end());
                        if text.is_empty() {
                            self.state = State::Head;
                            return (used, Some(Event::Message(self.complete())));
                        }
                        if let Some((n, v)) = text.split_once(':') {
                            current(&mut self.msg).trailers.push(n.trim(), v.trim());
                        }
                        (used, None)
                    }
                },
            },
        }
    }

    fn complete(&mut self) -> Box<Message> {
        self.body_hole = false;
        let mut msg = self.msg.take().unwrap_or_else(spare::message);
        if std::mem::take(&mut self.encoded) {
            msg.decode_content(self.limits.max_body);
        }
        msg
    }
}

/// The message being parsed, from the spares if none is yet.
fn current(msg: &mut Option<Box<Message>>) -> &mut Message {
    msg.get_or_insert_with(spare::message)
}

/// The head at the start of `buf`, written into `head`: its length, or
/// `Ok(None)` while incomplete (`head` is then left as it was).
fn parse_head(kind: Kind, buf: &[u8], head: &mut Head) -> Result<Option<usize>, httparse::Error> {
    // Left uninitialised: httparse writes the headers it finds, and zeroing
    // 128 of them (4 KiB) cost more than parsing a short head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let config = httparse::ParserConfig::default();
    // Into the (spare) message's own buffers: no allocation once they are big enough.
    let set = |to: &mut String, from: Option<&str>| {
        to.clear();
        to.push_str(from.unwrap_or_default());
    };
    Ok(match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(&mut []);
            match config.parse_request_with_uninit_headers(&mut req, buf, &mut headers)? {
                httparse::Status::Partial => None,
                httparse::Status::Complete(n) => {
                    set(&mut head.method, req.method);
                    set(&mut head.target, req.path);
                    head.version = Version::http1(req.version);
                    head.headers.fill_from_head(buf, req.headers);
                    Some(n)
                }
            }
        }
        Kind::Response => {
            let mut resp = httparse::Response::new(&mut []);
            match config.parse_response_with_uninit_headers(&mut resp, buf, &mut headers)? {
                httparse::Status::Partial => None,
                httparse::Status::Complete(n) => {
                    head.status = resp.code.unwrap_or_default();
                    set(&mut head.reason, resp.reason);
                    head.version = Version::http1(resp.version);
                    head.headers.fill_from_head(buf, resp.headers);
                    Some(n)
                }
            }
        }
    })
}

/// Appends to `line` up to and including LF; returns bytes used once the line is whole.
fn line_end(line: &mut Vec<u8>, data: &[u8]) -> Option<usize> {
    const MAX_LINE: usize = 4096;
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            line.extend_from_slice(&data[..i]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Some(i + 1)
        }
        None => {
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&data[..room.min(data.len())]);
            None
        }
    }
}

/// The size on a chunk-size line (`line`, its CRLF already taken off and
/// given back here): httparse's parser, 1 to 16 hex digits, then optional
/// whitespace and `;extensions`. An empty size is refused (httparse reads it
/// as 0, which would end the body).
fn parse_chunk_size(line: &mut Vec<u8>) -> Option<u64> {
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return None;
    }
    line.extend_from_slice(b"\r\n");
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Some(size),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` split at `cuts`, returns events.
    pub(crate) fn parse_split(kind: Kind, data: &[u8], cuts: &[usize], head_req: bool) -> Vec<Event> {
        let mut p = MessageParser::new(kind, Limits::default());
        let mut events = Vec::new();
        let mut pieces = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&data.len())) {
            pieces.push(&data[last..c]);
            last = c;
        }
        for (i, mut piece) in pieces.into_iter().enumerate() {
            while !piece.is_empty() {
                let (n, ev) = p.advance(piece, i as u64, head_req);
                assert!(n > 0 || ev.is_some(), "no progress");
                piece = &piece[n..];
                events.extend(ev);
            }
        }
        events.extend(p.finish(99).map(Event::Message));
        events
    }

    /// Feeds `data` whole to `p`, returns the messages it completed.
    fn feed_all(p: &mut MessageParser, mut data: &[u8]) -> Vec<Message> {
        let mut events = Vec::new();
        while !data.is_empty() {
            let (n, ev) = p.advance(data, 0, false);
            data = &data[n..];
            events.extend(ev);
        }
        messages(events)
    }

    fn messages(events: Vec<Event>) -> Vec<Message> {
        events
            .into_iter()
            .map(|e| match e {
                Event::Message(m) => *m,
                Event::Error(e) => panic!("unexpected {e}"),
            })
            .collect()
    }

    const PIPELINED: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 9\r\n\r\n";

    #[test]
    fn pipelined_requests_with_every_framing() {
        let m = messages(parse_split(Kind::Request, PIPELINED, &[], false));
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].head.method.as_str(), m[0].head.target.as_str()), ("GET", "/a"));
        assert_eq!(m[1].body, b"hello");
        assert_eq!(m[2].body, b"abcde");
        assert_eq!(
            m[2].trailers,
            crate::protocols::exchange::Fields::from_iter([("X-Sum", "9")]),
            "trailers apart from the headers"
        );
    }

    #[test]
    fn a_parser_between_messages_holds_no_message() {
        // Idle keep-alive connections must not each keep a spare's buffers.
        let mut p = MessageParser::new(Kind::Request, Limits::default());
        assert!(p.msg.is_none());
        let (_, ev) = p.advance(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n", 0, false);
        assert!(ev.is_none() && p.msg.is_some(), "a message underway is held");
        let (_, ev) = p.advance(b"hi", 1, false);
        assert!(matches!(ev, Some(Event::Message(m)) if m.body == b"hi"));
        assert!(p.msg.is_none(), "given out whole, nothing kept");
    }

    #[test]
    fn any_split_parses_the_same() {
        let whole = messages(parse_split(Kind::Request, PIPELINED, &[], false));
        for a in 0..PIPELINED.len() {
            for b in [a, (a + 1).min(PIPELINED.len()), (a + 7).min(PIPELINED.len())] {
                let split = messages(parse_split(Kind::Request, PIPELINED, &[a, b.max(a)], false));
                let strip = |v: Vec<Message>| -> Vec<(Head, Vec<u8>)> {
                    v.into_iter().map(|m| (m.head, m.body)).collect()
                };
                assert_eq!(strip(split), strip(whole.clone()), "split at {a},{b}");
            }
        }
    }

    #[test]
    fn responses_without_bodies() {
        let head = messages(parse_split(
            Kind::Response,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            &[],
            true,
        ));
        assert_eq!(head.len(), 1);
        assert!(head[0].body.is_empty());
        let r = messages(parse_split(
            Kind::Response,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
            &[],
            false,
        ));
        assert_eq!(r.iter().map(|m| m.head.status).collect::<Vec<_>>(), vec![100, 204, 304]);
    }

    #[test]
    fn a_gap_inside_a_known_body_is_counted_and_parsing_goes_on() {
        let mut p = MessageParser::new(Kind::Response, Limits::default());
        let msgs = feed_all(&mut p, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
        assert!(msgs.is_empty());
        assert_eq!(p.absorb_gap(6, 0), Some(None));
        let msgs = feed_all(&mut p, b"ijHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(msgs.len(), 2);
        // The bytes after the hole are counted, not kept: the body stays a prefix.
        assert_eq!((msgs[0].body.as_slice(), msgs[0].body_truncated), (&b"ab"[..], 8));
        assert_eq!(msgs[1].head.status, 204);
        // A gap ending the body ends the message.
        let mut p = MessageParser::new(Kind::Response, Limits::default());
        feed_all(&mut p, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
        let Some(Some(Event::Message(m))) = p.absorb_gap(2, 9) else { panic!("the message ends") };
        assert_eq!((m.body.as_slice(), m.body_truncated, m.end_ts), (&b"ab"[..], 2, 9));
        // One reaching past the body's end, or in a head, cannot be placed.
        let mut p = MessageParser::new(Kind::Response, Limits::default());
        feed_all(&mut p, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
        assert_eq!(p.absorb_gap(3, 0), None);
        let mut p = MessageParser::new(Kind::Request, Limits::default());
        feed_all(&mut p, b"GET / HT");
        assert_eq!(p.absorb_gap(1, 0), None);
    }

    #[test]
    fn body_until_close() {
        let r = messages(parse_split(Kind::Response, b"HTTP/1.0 200 OK\r\n\r\nall of it", &[22], false));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].body, b"all of it");
        assert_eq!(r[0].end_ts, 99);
    }

    #[test]
    fn switching_protocols_upgrades() {
        let mut p = MessageParser::new(Kind::Response, Limits::default());
        let data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
        let (n, ev) = p.advance(data, 0, false);
        assert!(matches!(ev, Some(Event::Message(m)) if m.head.status == 101));
        assert!(p.upgraded());
        assert_eq!(&data[n..], b"\x81\x05hello");
    }

    #[test]
    fn garbage_is_an_error_then_resync_at_a_message_start() {
        let mut p = MessageParser::new(Kind::Request, Limits::default());
        let (_, ev) = p.advance(b"\x16\x03\x01 not http\r\n\r\n", 0, false);
        assert!(matches!(ev, Some(Event::Error(ParseError::Head(_)))));
        assert!(p.resyncing());
        assert!(!p.resync(b"more garbage"));
        assert!(p.resync(b"GET / HTTP/1.1\r\n"));
        let (_, ev) = p.advance(b"GET / HTTP/1.1\r\n\r\n", 0, false);
        assert!(matches!(ev, Some(Event::Message(_))));
    }

    #[test]
    fn chunk_size_lines() {
        let size = |line: &[u8]| parse_chunk_size(&mut line.to_vec());
        assert_eq!(size(b"1a"), Some(0x1a));
        assert_eq!(size(b"1A;name=value"), Some(0x1a));
        assert_eq!(size(b"5 \t;ext"), Some(5), "whitespace before the extensions");
        assert_eq!(size(b"5;\xff"), Some(5), "extension bytes are not read");
        assert_eq!(size(b"0"), Some(0));
        assert_eq!(size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in
            [&b""[..], b";ext", b"zz", b"10000000000000000", b"5 5", b" 5", b"+5", b"-1", b"5\r", b"0x5"]
        {
            assert_eq!(size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bad_chunk_sizes_and_lengths_are_errors() {
        let e = parse_split(
            Kind::Request,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            &[],
            false,
        );
        assert_eq!(e, vec![Event::Error(ParseError::Chunked)]);
        let e = parse_split(Kind::Request, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &[], false);
        assert_eq!(e, vec![Event::Error(ParseError::ContentLength)]);
    }

    #[test]
    fn limits_bound_memory() {
        let limits = Limits { max_head: 64, max_body: 4 };
        let mut p = MessageParser::new(Kind::Request, limits);
        let (_, ev) = p.advance(&[b'a'; 200], 0, false);
        assert!(matches!(ev, Some(Event::Error(_))), "{ev:?}");
        let mut p = MessageParser::new(Kind::Request, limits);
        let data = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
        let (n, _) = p.advance(data, 0, false);
        let (_, ev) = p.advance(&data[n..], 0, false);
        let Some(Event::Message(m)) = ev else { panic!("{ev:?}") };
        assert_eq!((m.body.as_slice(), m.body_truncated), (&b"0123"[..], 6));
    }

    #[test]
    fn gzip_bodies_are_decoded_with_the_header_kept() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"hello hello hello").unwrap();
        let gz = enc.finish().unwrap();
        let mut data =
            format!("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", gz.len())
                .into_bytes();
        data.extend_from_slice(&gz);
        let m = messages(parse_split(Kind::Response, &data, &[30], false));
        assert_eq!(m[0].body, b"hello hello hello");
        assert_eq!(m[0].head.header("content-encoding"), Some("gzip"));
    }
}

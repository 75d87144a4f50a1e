//! Pairs requests with responses on one connection: in order (pipelining
//! answers requests first-in first-out), skipping interim 1xx answers, and
//! handing the rest of both directions to the caller as raw bytes after an
//! upgrade (101, a successful CONNECT).

use super::message::{Event, Kind, MessageParser};
use crate::protocols::exchange::{Exchange, HttpOutput, Limits, Message};
use crate::protocols::spare;
use std::collections::VecDeque;

/// HTTP/1.x state of one connection.
#[derive(Debug)]
pub struct Http1Session {
    req: MessageParser,
    resp: MessageParser,
    /// Requests waiting for their answers, each already in the box its
    /// exchange leaves in (no move of the message when it is answered).
    pending: VecDeque<Box<Exchange>>,
    /// A final response that ended before its request did: servers answer
    /// before reading a whole body (nginx discarding it, a 413, an early
    /// error), and TLS libraries hand over a write only when it returns,
    /// which can be after another thread read the answer (Go's HTTP client
    /// writes and reads on two goroutines). It answers the next request to end.
    early: Option<Box<Message>>,
    /// Both directions were seen from their first byte with no gap since:
    /// a response with no request can only be one that overtook it.
    from_start: bool,
    /// A request upgraded to HTTP/2 (`Upgrade: h2c` answered by 101): the
    /// connection continues as HTTP/2 with this request on stream 1.
    h2c: Option<Box<Message>>,
    limits: Limits,
}

/// Requests waiting for answers at most; beyond that the oldest is given up
/// as unanswered (a server that never answers must not grow memory).
const MAX_PENDING: usize = 256;

impl Http1Session {
    /// A session that starts at a message boundary in both directions.
    pub fn new(limits: Limits) -> Self {
        Self {
            req: MessageParser::new(Kind::Request, limits),
            resp: MessageParser::new(Kind::Response, limits),
            pending: VecDeque::new(),
            early: None,
            from_start: true,
            h2c: None,
            limits,
        }
    }

    /// The limits it was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The request whose 101 switched the connection to HTTP/2 (RFC 7540
    /// §3.2), once: its answer comes on stream 1 of the HTTP/2 connection.
    pub fn take_h2c_upgrade(&mut self) -> Option<Box<Message>> {
        self.h2c.take()
    }

    /// A session joining a connection mid-stream: both directions wait for
    /// the next message start.
    pub fn midstream(limits: Limits) -> Self {
        let mut s = Self::new(limits);
        s.req.lose_sync();
        s.resp.lose_sync();
        s.from_start = false;
        s
    }

    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, data: &[u8], ts: u64, out: &mut Vec<HttpOutput>) {
        let mut at = 0;
        {
            let parser = if request_side { &mut self.req } else { &mut self.resp };
            if parser.resyncing() && !parser.resync(data) {
                out.push(HttpOutput::Raw(0..data.len()));
                return;
            }
        }
        while at < data.len() {
            let parser = if request_side { &mut self.req } else { &mut self.resp };
            if parser.upgraded() || parser.resyncing() {
                out.push(HttpOutput::Raw(at..data.len()));
                return;
            }
            let head_req =
                self.pending.front().is_some_and(|e| e.request.head.method.eq_ignore_ascii_case("HEAD"));
            let (n, ev) = parser.advance(&data[at..], ts, head_req);
            match ev {
                None => {}
                Some(Event::Error(e)) => {
                    out.push(HttpOutput::Error(e.to_string()));
                    // What did not parse stays as raw bytes.
                    out.push(HttpOutput::Raw(at..data.len()));
                    return;
                }
                Some(Event::Message(m)) if request_side => self.on_request(m, out),
                Some(Event::Message(m)) => self.on_response(m, out),
            }
            at += n;
        }
    }

    fn on_request(&mut self, m: Box<Message>, out: &mut Vec<HttpOutput>) {
        let waiting = spare::exchange(m);
        if self.pending.is_empty() {
            if let Some(response) = self.early.take() {
                self.answer(waiting, response, out);
                return;
            }
        }
        if self.pending.len() >= MAX_PENDING {
            let unanswered = self.pending.pop_front().expect("non-empty");
            out.push(HttpOutput::Exchange(unanswered));
        }
        self.pending.push_back(waiting);
    }

    fn on_response(&mut self, m: Box<Message>, out: &mut Vec<HttpOutput>) {
        let status = m.head.status;
        if (100..200).contains(&status) && status != 101 {
            return; // interim (100 Continue, 103 Early Hints): the real answer follows
        }
        let Some(waiting) = self.pending.pop_front() else {
            let request_underway = !self.req.idle() && !self.req.resyncing();
            if request_underway || self.from_start {
                if self.early.is_none() {
                    self.early = Some(m);
                } else {
                    out.push(unpaired(&m)); // one answer waits for its request, not two
                }
            }
            // Else it answers a request from before we were in sync.
            return;
        };
        self.answer(waiting, m, out);
    }

    /// Pairs the request waiting in `e` with its answer `m`.
    fn answer(&mut self, mut e: Box<Exchange>, m: Box<Message>, out: &mut Vec<HttpOutput>) {
        let status = m.head.status;
        let tunnel = status == 101
            || (e.request.head.method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status));
        if tunnel {
            self.req.upgrade();
            self.resp.upgrade();
        }
        let h2c = |h: &crate::protocols::exchange::Head| h.has_token("upgrade", "h2c");
        if status == 101 && h2c(&e.request.head) && h2c(&m.head) {
            // Not the answer: that comes over HTTP/2.
            self.h2c = Some(std::mem::replace(&mut e.request, spare::message()));
            return;
        }
        e.response = Some(m);
        out.push(HttpOutput::Exchange(e));
    }

    /// `len` bytes of one direction went missing at `ts`. Inside a body
    /// whose framing covers them, they are counted as not kept and the
    /// message survives (true; if the hole ended it, it is paired now).
    /// Else that direction waits for the next message start (and a request
    /// lost this way is never paired).
    pub fn gap(&mut self, request_side: bool, len: u64, ts: u64, out: &mut Vec<HttpOutput>) -> bool {
        let parser = if request_side { &mut self.req } else { &mut self.resp };
        if let Some(ended) = parser.absorb_gap(len, ts) {
            if let Some(Event::Message(m)) = ended {
                if request_side {
                    self.on_request(m, out);
                } else {
                    self.on_response(m, out);
                }
            }
            return true;
        }
        if request_side {
            self.req.lose_sync();
            self.drop_early(out); // its request is lost
            self.from_start = false;
        } else if !self.resp.upgraded() {
            self.resp.lose_sync();
            // The answer to the oldest request is lost with the gap.
            self.pending.pop_front();
        }
        false
    }

    /// The connection ended: finish a body delimited by the close and give
    /// up the requests never answered.
    pub fn close(&mut self, ts: u64, out: &mut Vec<HttpOutput>) {
        if let Some(m) = self.resp.finish(ts) {
            self.on_response(m, out);
        }
        for unanswered in self.pending.drain(..) {
            out.push(HttpOutput::Exchange(unanswered));
        }
        self.drop_early(out);
    }

    /// The answer that overtook its request, which will not come now.
    fn drop_early(&mut self, out: &mut Vec<HttpOutput>) {
        if let Some(m) = self.early.take() {
            out.push(unpaired(&m));
        }
    }

    /// True once the request direction has found a message start.
    pub fn synced(&self) -> bool {
        !self.req.resyncing()
    }

    /// True once both directions are past an upgrade.
    pub fn upgraded(&self) -> bool {
        self.req.upgraded() && self.resp.upgraded()
    }
}

/// A complete answer with no request to pair it with: said as a `drop`
/// (its body's bytes), never lost silently.
fn unpaired(m: &Message) -> HttpOutput {
    HttpOutput::Drop { reason: "http_response_unpaired", bytes: m.body.len() as u64 + m.body_truncated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchanges(out: &[HttpOutput]) -> Vec<&Exchange> {
        out.iter().filter_map(|o| if let HttpOutput::Exchange(e) = o { Some(&**e) } else { None }).collect()
    }

    #[test]
    fn pipelined_requests_pair_in_order_with_head_and_continue() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, b"HEAD /h HTTP/1.1\r\n\r\nPOST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", 10, &mut out);
        s.feed(
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            25,
            &mut out,
        );
        let ex = exchanges(&out);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].request.head.target, "/h");
        assert_eq!(ex[0].response.as_ref().unwrap().head.status, 200);
        assert!(ex[0].response.as_ref().unwrap().body.is_empty(), "a HEAD answer has no body");
        assert_eq!(ex[1].request.body, b"hi");
        assert_eq!(ex[1].response.as_ref().unwrap().head.status, 201);
        assert_eq!(ex[1].latency_ns(), Some(15));
    }

    #[test]
    fn websocket_upgrade_hands_over_raw_bytes() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0, &mut out);
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        s.feed(false, resp, 1, &mut out);
        assert_eq!(exchanges(&out).len(), 1);
        let head_len = resp.len() - 4;
        assert_eq!(out.last(), Some(&HttpOutput::Raw(head_len..resp.len())));
        assert!(s.upgraded());
        out.clear();
        s.feed(true, b"\x81\x82ab", 2, &mut out);
        assert_eq!(out, vec![HttpOutput::Raw(0..4)]);
    }

    #[test]
    fn midstream_waits_for_a_request_start() {
        let mut s = Http1Session::midstream(Limits::default());
        let mut out = Vec::new();
        s.feed(false, b"tail of an old body", 0, &mut out);
        s.feed(true, b"rest of an old request", 0, &mut out);
        assert_eq!(out, vec![HttpOutput::Raw(0..19), HttpOutput::Raw(0..22)]);
        out.clear();
        s.feed(true, b"GET /next HTTP/1.1\r\n\r\n", 1, &mut out);
        s.feed(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2, &mut out);
        let ex = exchanges(&out);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].request.head.target, "/next");
    }

    #[test]
    fn an_answer_whose_request_never_comes_is_counted() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        // Two answers overtake their requests: the first waits, the second is said.
        s.feed(false, &[&answer[..], &answer[..]].concat(), 1, &mut out);
        assert_eq!(out, vec![HttpOutput::Drop { reason: "http_response_unpaired", bytes: 3 }]);
        out.clear();
        // The connection ends without the requests: the waiting one too.
        s.close(2, &mut out);
        assert_eq!(out, vec![HttpOutput::Drop { reason: "http_response_unpaired", bytes: 3 }]);
        // A late request pairs with the answer that overtook it.
        let mut s = Http1Session::new(Limits::default());
        out.clear();
        s.feed(false, answer, 1, &mut out);
        s.feed(true, b"GET /late HTTP/1.1\r\n\r\n", 2, &mut out);
        s.close(3, &mut out);
        let ex = exchanges(&out);
        assert_eq!((ex.len(), out.len()), (1, 1));
        assert_eq!(ex[0].request.head.target, "/late");
    }

    #[test]
    fn close_ends_bodies_and_reports_unanswered_requests() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", 0, &mut out);
        s.feed(false, b"HTTP/1.0 200 OK\r\n\r\nuntil close", 1, &mut out);
        s.close(5, &mut out);
        let ex = exchanges(&out);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].response.as_ref().unwrap().body, b"until close");
        assert!(ex[1].response.is_none());
    }

    #[test]
    fn garbage_after_a_good_exchange_is_raw() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, b"GET / HTTP/1.1\r\n\r\n", 0, &mut out);
        s.feed(true, b"\x00\x01garbage", 0, &mut out);
        assert!(matches!(out[0], HttpOutput::Error(_)), "{out:?}");
        assert_eq!(out[1], HttpOutput::Raw(0..9));
    }

    #[test]
    fn an_answer_before_the_whole_request_body_pairs_with_that_request() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, b"POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\nab", 1, &mut out);
        s.feed(false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA!", 2, &mut out);
        assert!(exchanges(&out).is_empty(), "the request is not over yet");
        s.feed(true, b"cdefPOST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", 3, &mut out);
        s.feed(false, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nB!", 4, &mut out);
        let ex = exchanges(&out);
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[0].request.head.target.as_str(), ex[0].request.body.as_slice()),
            ("/a", &b"abcdef"[..])
        );
        assert_eq!(ex[0].response.as_ref().unwrap().body, b"A!");
        assert_eq!(ex[1].request.head.target, "/b");
        assert_eq!(ex[1].response.as_ref().unwrap().head.status, 201);
    }

    #[test]
    fn an_answer_that_overtook_its_request_pairs_with_it() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        s.feed(true, b"GET /0 HTTP/1.1\r\n\r\n", 1, &mut out);
        s.feed(false, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0", 2, &mut out);
        // The next answer is handed over before its request.
        s.feed(false, b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n1", 3, &mut out);
        s.feed(true, b"GET /1 HTTP/1.1\r\n\r\n", 4, &mut out);
        s.feed(true, b"GET /2 HTTP/1.1\r\n\r\n", 5, &mut out);
        s.feed(false, b"HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\n2", 6, &mut out);
        let ex = exchanges(&out);
        let pairs: Vec<(&str, u16)> = ex
            .iter()
            .map(|e| (e.request.head.target.as_str(), e.response.as_ref().unwrap().head.status))
            .collect();
        assert_eq!(pairs, [("/0", 200), ("/1", 201), ("/2", 202)]);
        // Joined mid-stream, an answer with no request is an old one: dropped.
        let mut s = Http1Session::midstream(Limits::default());
        let mut out = Vec::new();
        s.feed(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, &mut out);
        s.feed(true, b"GET /n HTTP/1.1\r\n\r\n", 2, &mut out);
        s.close(3, &mut out);
        assert!(exchanges(&out)[0].response.is_none());
    }

    #[test]
    fn unanswered_requests_are_bounded() {
        let mut s = Http1Session::new(Limits::default());
        let mut out = Vec::new();
        for _ in 0..MAX_PENDING + 10 {
            s.feed(true, b"GET / HTTP/1.1\r\n\r\n", 0, &mut out);
        }
        assert_eq!(exchanges(&out).len(), 10);
        assert_eq!(s.pending.len(), MAX_PENDING);
    }
}

//! One HTTP/2 connection, sans IO: each direction's frames (`reader`) and
//! header blocks (`hpack`), and the streams paired into exchanges. A
//! stream's exchange comes out when both its halves ended (END_STREAM), when
//! it is reset, when it is given up for a newer one, or when the connection
//! ends. Memory is bounded: open streams, body bytes held across them, a
//! header block, the HPACK table, each with a `drop` output when reached.

use super::frame::{kind, Frame, FrameHeader, PREFACE};
use super::hpack::{Decoded, HeaderDecoder};
use super::reader::{Event, FrameReader, GapOutcome};
use crate::protocols::exchange::{Exchange, Head, HttpOutput, Limits, Message, Version};
use crate::protocols::spare;
use std::collections::{HashMap, VecDeque};

/// Streams followed at once (servers allow 100 to 250 concurrent streams
/// per connection); beyond, the oldest comes out as it is.
const MAX_STREAMS: usize = 256;
/// Body bytes held across a connection's open streams, in `max_body`s;
/// beyond, bodies are cut (and counted in `body_truncated`).
const BODIES_HELD: usize = 4;
/// HPACK dynamic table followed per direction (peers use 4 KiB by default).
const MAX_TABLE: usize = 64 << 10;
/// RST_STREAM's error code for "no error".
const NO_ERROR: u32 = 0;
/// Stream ids remembered as ended or given up, to tell their late frames
/// (DATA racing a RST_STREAM) from new streams. Not the highest id seen: a
/// response can be handed over before its request (TLS libraries report a
/// write when it returns), so ids are not seen in order.
const RECENT_IDS: usize = 1024;

/// One direction of a stream: the request (0) or the response (1).
#[derive(Debug)]
struct Half {
    /// In the box it leaves in (a spare's: see `spare`).
    msg: Box<Message>,
    /// A frame of this half was seen.
    started: bool,
    /// Its first header block was seen (so the next one is trailers).
    headers_seen: bool,
    /// END_STREAM was seen.
    done: bool,
}

impl Default for Half {
    fn default() -> Self {
        Half { msg: spare::message(), started: false, headers_seen: false, done: false }
    }
}

#[derive(Debug, Default)]
struct Stream {
    halves: [Half; 2],
    order: u64,
    reset: Option<u32>,
}

/// A header block gathered from HEADERS or PUSH_PROMISE and CONTINUATION.
#[derive(Debug)]
struct Block {
    stream: u32,
    bytes: Vec<u8>,
    end_stream: bool,
    /// A PUSH_PROMISE: the request of this stream, pushed by the server.
    promised: Option<u32>,
}

impl Block {
    /// The stream whose half this block heads; 0 for a promise, whose
    /// pushed request is simply given up when its block is lost (the pushed
    /// answer then comes out with its request `headers_incomplete`).
    fn heads(&self) -> u32 {
        if self.promised.is_some() {
            0
        } else {
            self.stream
        }
    }
}

/// The state of one direction.
#[derive(Debug)]
struct Side {
    reader: FrameReader,
    hpack: HeaderDecoder,
    block: Option<Block>,
}

/// HTTP/2 state of one connection.
#[derive(Debug)]
pub struct Http2Session {
    /// By direction: 0 is the one fed as `request_side`.
    sides: [Side; 2],
    /// Direction 0 carries responses (learnt from pseudo-headers when the
    /// connection was joined mid-stream with its roles unknown).
    flipped: bool,
    roles_known: bool,
    preface_left: usize,
    streams: HashMap<u32, Stream>,
    next_order: u64,
    /// Recently ended or given-up stream ids.
    recent: VecDeque<u32>,
    /// Recently given-up stream ids, whose later frames are lost.
    given_up: VecDeque<u32>,
    body_held: usize,
    /// Streams reset with NO_ERROR after a whole answer, and the half
    /// (role) whose bytes in flight still come: (stream, role).
    draining: Vec<(u32, usize)>,
    table_over_limit: bool,
    limits: Limits,
}

fn push_bounded(q: &mut VecDeque<u32>, id: u32) {
    if q.len() >= RECENT_IDS {
        q.pop_front();
    }
    q.push_back(id);
}

fn drop_out(out: &mut Vec<HttpOutput>, reason: &'static str, bytes: usize) {
    out.push(HttpOutput::Drop { reason, bytes: bytes as u64 });
}

impl Http2Session {
    fn with(limits: Limits, midstream: bool) -> Self {
        let side = || Side {
            reader: if midstream {
                FrameReader::midstream(limits.max_head)
            } else {
                FrameReader::new(limits.max_head)
            },
            hpack: HeaderDecoder::new(MAX_TABLE),
            block: None,
        };
        Self {
            sides: [side(), side()],
            flipped: false,
            roles_known: !midstream,
            preface_left: if midstream { 0 } else { PREFACE.len() },
            streams: HashMap::new(),
            next_order: 0,
            recent: VecDeque::new(),
            given_up: VecDeque::new(),
            body_held: 0,
            draining: Vec::new(),
            table_over_limit: false,
            limits,
        }
    }

    /// A session from the connection's first byte: the client preface comes
    /// first in the request direction.
    pub fn new(limits: Limits) -> Self {
        Self::with(limits, false)
    }

    /// A session continuing an HTTP/1.1 connection upgraded with `Upgrade:
    /// h2c`: `request` is stream 1's, its answer comes over HTTP/2; the
    /// client's preface comes next, the server's SETTINGS straight away.
    pub fn upgraded(limits: Limits, request: Box<Message>) -> Self {
        let mut s = Self::with(limits, false);
        let mut stream = Stream::default();
        stream.halves[0] = Half { msg: request, started: true, headers_seen: true, done: true };
        s.body_held = stream.halves[0].msg.body.len();
        s.streams.insert(1, stream);
        s.next_order = 1;
        s
    }

    /// A session joining a connection mid-stream: frame boundaries are
    /// searched for, the HPACK tables are unknown (fields that refer to
    /// them are missing, `headers_incomplete`), and the request direction
    /// is a guess until a decoded `:method` or `:status` says otherwise.
    pub fn midstream(limits: Limits) -> Self {
        Self::with(limits, true)
    }

    /// True while either direction is at a frame boundary.
    pub fn synced(&self) -> bool {
        self.sides.iter().any(|s| s.reader.synced())
    }

    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, mut data: &[u8], ts: u64, out: &mut Vec<HttpOutput>) {
        let dir = usize::from(!request_side);
        if dir == 0 && self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            self.preface_left -= n;
            data = &data[n..];
        }
        let mut reader = std::mem::replace(&mut self.sides[dir].reader, FrameReader::new(0));
        reader.feed(data, &mut |e| self.on_event(dir, e, ts, out));
        self.sides[dir].reader = reader;
    }

    /// `len` bytes of a direction went missing. Inside a DATA frame they are
    /// counted in that body and nothing else is lost (true). Otherwise the
    /// frame boundaries are searched for again and the direction's HPACK
    /// table is forgotten (false).
    pub fn gap(&mut self, request_side: bool, len: u64, ts: u64, out: &mut Vec<HttpOutput>) -> bool {
        let dir = usize::from(!request_side);
        let mut reader = std::mem::replace(&mut self.sides[dir].reader, FrameReader::new(0));
        let outcome = reader.gap(len, &mut |e| self.on_event(dir, e, ts, out));
        self.sides[dir].reader = reader;
        match outcome {
            GapOutcome::Body { stream, bytes } => {
                let role = self.role(dir);
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.halves[role].msg.body_truncated += bytes;
                }
                true
            }
            GapOutcome::Skipped => true,
            GapOutcome::Lost => {
                self.sides[dir].hpack.forget();
                if let Some(b) = self.sides[dir].block.take() {
                    self.block_lost(dir, b.heads(), b.end_stream, ts, out);
                }
                false
            }
        }
    }

    /// The connection ended: every stream still open comes out as it is.
    pub fn close(&mut self, _ts: u64, out: &mut Vec<HttpOutput>) {
        self.draining.clear();
        let mut open: Vec<(u32, Stream)> = self.streams.drain().collect();
        open.sort_by_key(|(_, s)| s.order);
        for (_, s) in open {
            self.emit(s, out);
        }
    }

    /// The role (0 request, 1 response) of what direction `dir` carries.
    fn role(&self, dir: usize) -> usize {
        dir ^ usize::from(self.flipped)
    }

    fn on_event(&mut self, dir: usize, e: Event<'_>, ts: u64, out: &mut Vec<HttpOutput>) {
        if !self.draining.is_empty() {
            self.end_draining(self.role(dir), event_stream(&e), out);
        }
        match e {
            Event::Frame(f) => self.on_frame(dir, f, ts, out),
            Event::Data { stream, data } => self.on_data(dir, stream, data, ts, out),
            Event::DataEnd { stream, end_stream: true } => self.end_half(self.role(dir), stream, ts, out),
            Event::DataEnd { .. } => {}
            Event::Oversized(h) => {
                if self.header_frame_lost(dir, &h, ts, out) {
                    drop_out(out, "http2_header_block_over_limit", h.len);
                } else {
                    drop_out(out, "http2_frame_over_limit", h.len);
                }
            }
            Event::Invalid(h, error) => {
                tracing::debug!(%error, "invalid HTTP/2 frame");
                self.header_frame_lost(dir, &h, ts, out);
                drop_out(out, "http2_invalid_frame", 0);
            }
            Event::Skipped(n) => drop_out(out, "http2_unframed", n as usize),
        }
    }

    /// A HEADERS, PUSH_PROMISE or CONTINUATION frame that could not be
    /// read: its block is lost, and the direction's table with it.
    fn header_frame_lost(&mut self, dir: usize, h: &FrameHeader, ts: u64, out: &mut Vec<HttpOutput>) -> bool {
        if !matches!(h.kind, kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION) {
            return false;
        }
        self.sides[dir].hpack.forget();
        let pending = self.sides[dir].block.take();
        let (stream, end_stream) = match (&pending, h.kind) {
            (Some(b), kind::CONTINUATION) => (b.heads(), b.end_stream),
            (_, kind::HEADERS) => (h.stream, h.flags & super::frame::flag::END_STREAM != 0),
            _ => (0, false), // a promise, or a continuation of nothing: no half to mark
        };
        self.block_lost(dir, stream, end_stream, ts, out);
        true
    }

    fn on_frame(&mut self, dir: usize, f: Frame<'_>, ts: u64, out: &mut Vec<HttpOutput>) {
        match f {
            Frame::Headers { stream, end_stream, end_headers, block } => self.start_block(
                dir,
                Block { stream, bytes: block.to_vec(), end_stream, promised: None },
                end_headers,
                ts,
                out,
            ),
            Frame::PushPromise { stream, promised, end_headers, block } => self.start_block(
                dir,
                Block { stream, bytes: block.to_vec(), end_stream: false, promised: Some(promised) },
                end_headers,
                ts,
                out,
            ),
            Frame::Continuation { stream, end_headers, block } => {
                let Some(mut b) = self.sides[dir].block.take() else { return };
                if b.stream != stream {
                    // A protocol error: the sender's table is unknown from here.
                    self.sides[dir].hpack.forget();
                    self.block_lost(dir, b.heads(), b.end_stream, ts, out);
                    return;
                }
                if b.bytes.len() + block.len() > self.limits.max_head {
                    drop_out(out, "http2_header_block_over_limit", b.bytes.len() + block.len());
                    self.sides[dir].hpack.forget();
                    self.block_lost(dir, b.heads(), b.end_stream, ts, out);
                    return;
                }
                b.bytes.extend_from_slice(block);
                self.pending_or_decode(dir, b, end_headers, ts, out);
            }
            Frame::RstStream { stream, code } => {
                let role = self.role(dir);
                let Some(s) = self.streams.get_mut(&stream) else { return };
                s.reset = Some(code);
                if code == NO_ERROR && s.halves[role].done {
                    // "Stop sending" after a whole answer (RFC 9113 §8.1):
                    // the rest of the request already on its way still
                    // belongs to it.
                    self.draining.push((stream, 1 - role));
                } else {
                    self.finish(stream, out);
                }
            }
            Frame::Settings { ack: false, settings } => {
                // This side's decoder table bounds what the other side's encoder uses.
                if let Some(size) = settings.header_table_size {
                    if !self.sides[1 - dir].hpack.peer_table_size(size) && !self.table_over_limit {
                        self.table_over_limit = true;
                        drop_out(out, "http2_header_table_over_limit", 0);
                    }
                }
            }
            // Flow control, liveness, priorities and shutdown change no exchange:
            // streams a GOAWAY leaves unanswered come out at the close.
            Frame::Settings { ack: true, .. }
            | Frame::Data { .. }
            | Frame::Priority { .. }
            | Frame::Ping { .. }
            | Frame::GoAway { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }

    fn start_block(&mut self, dir: usize, b: Block, end_headers: bool, ts: u64, out: &mut Vec<HttpOutput>) {
        if let Some(old) = self.sides[dir].block.take() {
            // A block left without its CONTINUATION: a protocol error.
            self.sides[dir].hpack.forget();
            self.block_lost(dir, old.heads(), old.end_stream, ts, out);
        }
        self.pending_or_decode(dir, b, end_headers, ts, out);
    }

    fn pending_or_decode(
        &mut self,
        dir: usize,
        b: Block,
        end_headers: bool,
        ts: u64,
        out: &mut Vec<HttpOutput>,
    ) {
        if end_headers {
            self.on_block(dir, b, ts, out);
        } else {
            self.sides[dir].block = Some(b);
        }
    }

    /// A whole header block of direction `dir`.
    fn on_block(&mut self, dir: usize, b: Block, ts: u64, out: &mut Vec<HttpOutput>) {
        let decoded = self.sides[dir].hpack.decode(&b.bytes, self.limits.max_head);
        if decoded.over_limit {
            drop_out(out, "http2_headers_over_limit", b.bytes.len());
        }
        self.learn_roles(dir, &decoded);
        if let Some(promised) = b.promised {
            // A pushed request: its headers and no body; the answer comes on `promised`.
            if let Some(s) = self.stream(promised, 0, out) {
                let half = &mut s.halves[0];
                start(half, ts);
                apply(half, decoded, false);
                half.done = true;
            }
            return;
        }
        let role = self.role(dir);
        let Some(s) = self.stream(b.stream, b.bytes.len(), out) else { return };
        let half = &mut s.halves[role];
        start(half, ts);
        if apply(half, decoded, role == 1) && b.end_stream {
            self.end_half(role, b.stream, ts, out);
        }
    }

    /// Mid-stream, the first decoded pseudo-header tells which direction
    /// carries requests; streams already created swap their halves.
    fn learn_roles(&mut self, dir: usize, d: &Decoded) {
        if self.roles_known {
            return;
        }
        let says_request = match d.fields.get(0).map(|(n, _)| n) {
            Some(":method" | ":path" | ":scheme" | ":authority") => true,
            Some(":status") => false,
            _ => return,
        };
        self.roles_known = true;
        // Direction `dir` carries requests exactly when its role is 0.
        if (self.role(dir) == 0) != says_request {
            self.flipped = !self.flipped;
            for s in self.streams.values_mut() {
                s.halves.swap(0, 1);
            }
        }
    }

    /// A header block of `stream` was lost: the half it belonged to is
    /// marked incomplete (and ended if the block ended it).
    fn block_lost(&mut self, dir: usize, stream: u32, end_stream: bool, ts: u64, out: &mut Vec<HttpOutput>) {
        let role = self.role(dir);
        let Some(s) = self.stream(stream, 0, out) else { return };
        let half = &mut s.halves[role];
        start(half, ts);
        half.headers_seen = true;
        half.msg.head.headers_incomplete = true;
        if end_stream {
            self.end_half(role, stream, ts, out);
        }
    }

    fn on_data(&mut self, dir: usize, stream: u32, data: &[u8], ts: u64, out: &mut Vec<HttpOutput>) {
        let role = self.role(dir);
        let room = (BODIES_HELD * self.limits.max_body).saturating_sub(self.body_held);
        let max_body = self.limits.max_body;
        let Some(s) = self.stream(stream, data.len(), out) else { return };
        let half = &mut s.halves[role];
        start(half, ts);
        let keep = max_body.saturating_sub(half.msg.body.len()).min(room).min(data.len());
        half.msg.body.extend_from_slice(&data[..keep]);
        half.msg.body_truncated += (data.len() - keep) as u64;
        half.msg.end_ts = ts;
        self.body_held += keep;
    }

    /// Stream `id`, created when it may be new. When it may not (ended, or
    /// given up: then its `bytes` are a drop), None.
    fn stream(&mut self, id: u32, bytes: usize, out: &mut Vec<HttpOutput>) -> Option<&mut Stream> {
        if id == 0 {
            return None;
        }
        if !self.streams.contains_key(&id) {
            if self.recent.contains(&id) {
                if self.given_up.contains(&id) {
                    drop_out(out, "http2_streams_over_limit", bytes);
                }
                return None;
            }
            if self.streams.len() >= MAX_STREAMS {
                self.give_up_oldest(out);
            }
            self.streams.insert(id, Stream { order: self.next_order, ..Stream::default() });
            self.next_order += 1;
        }
        self.streams.get_mut(&id)
    }

    fn give_up_oldest(&mut self, out: &mut Vec<HttpOutput>) {
        let Some(oldest) = self.streams.iter().min_by_key(|(_, s)| s.order).map(|(id, _)| *id) else {
            return;
        };
        push_bounded(&mut self.given_up, oldest);
        drop_out(out, "http2_streams_over_limit", 0);
        self.finish(oldest, out);
    }

    /// Streams draining after a RST_STREAM(NO_ERROR) end when their half
    /// that `role` carries moves on to another stream (the sender stopped).
    fn end_draining(&mut self, role: usize, stream: Option<u32>, out: &mut Vec<HttpOutput>) {
        let Some(stream) = stream else { return };
        let mut i = 0;
        while i < self.draining.len() {
            let (id, half) = self.draining[i];
            if half == role && id != stream {
                self.finish(id, out);
            } else {
                i += 1;
            }
        }
    }

    fn end_half(&mut self, role: usize, stream: u32, ts: u64, out: &mut Vec<HttpOutput>) {
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.halves[role].done = true;
        s.halves[role].msg.end_ts = ts;
        if s.halves.iter().all(|h| h.done) {
            self.finish(stream, out);
        }
    }

    /// Stream `id` is over: it comes out, and its later frames are ignored.
    fn finish(&mut self, id: u32, out: &mut Vec<HttpOutput>) {
        if let Some(s) = self.streams.remove(&id) {
            push_bounded(&mut self.recent, id);
            self.draining.retain(|(d, _)| *d != id);
            self.emit(s, out);
        }
    }

    /// A stream as an exchange. A half whose headers were never seen (the
    /// stream began before the connection was joined, or its block was
    /// lost) says `headers_incomplete`; a response never begun is `None`.
    fn emit(&mut self, s: Stream, out: &mut Vec<HttpOutput>) {
        let [req, resp] = s.halves;
        self.body_held -= req.msg.body.len() + resp.msg.body.len();
        if !req.started && !resp.started {
            return;
        }
        let max_body = self.limits.max_body;
        let finish = |mut h: Half| {
            h.msg.head.version = Version::H2;
            h.msg.head.headers_incomplete |= !h.headers_seen;
            h.msg.decode_content(max_body);
            h.msg
        };
        let request_seen = req.started;
        let mut request = finish(req);
        let response = resp.started.then(|| finish(resp));
        if let (false, Some(r)) = (request_seen, &response) {
            // Begun before the connection was joined: timed by its answer.
            (request.start_ts, request.end_ts) = (r.start_ts, r.start_ts);
        }
        out.push(HttpOutput::Exchange(Box::new(Exchange { request, response, reset: s.reset })));
    }
}

/// The stream an event is about (none for connection-level frames).
fn event_stream(e: &Event<'_>) -> Option<u32> {
    let id = match e {
        Event::Data { stream, .. } | Event::DataEnd { stream, .. } => *stream,
        Event::Frame(
            Frame::Headers { stream, .. }
            | Frame::Continuation { stream, .. }
            | Frame::PushPromise { stream, .. }
            | Frame::RstStream { stream, .. }
            | Frame::Data { stream, .. },
        ) => *stream,
        _ => 0,
    };
    (id != 0).then_some(id)
}

fn start(half: &mut Half, ts: u64) {
    if !half.started {
        half.started = true;
        half.msg.start_ts = ts;
    }
    half.msg.end_ts = ts;
}

/// A decoded block into its half: the head (pseudo-headers as method,
/// path, status) the first time, trailers after. False for an interim (1xx)
/// response head, which the real one replaces.
fn apply(half: &mut Half, d: Decoded, response: bool) -> bool {
    if half.headers_seen {
        half.msg.trailers.extend(&d.fields);
        half.msg.head.headers_incomplete |= !d.complete;
        return true;
    }
    let head = &mut half.msg.head;
    for (name, value) in &d.fields {
        match name {
            ":method" => value.clone_into(&mut head.method),
            ":path" => value.clone_into(&mut head.target),
            ":status" => head.status = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    head.headers = d.fields;
    head.headers_incomplete = !d.complete;
    if response && (100..200).contains(&head.status) {
        *head = Head::default();
        return false;
    }
    half.headers_seen = true;
    true
}

//! One HTTP/2 connection: both directions' frames, an HPACK decoder per
//! direction (loona-hpack), and streams paired into exchanges. A stream's
//! exchange comes out when both its halves ended (END_STREAM), when it is
//! reset, or when the connection ends.

use super::frame::{flag, kind, Frame, FrameReader};
use crate::protocols::exchange::{Exchange, Head, HttpOutput, Limits, Message, Version};
use std::collections::HashMap;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Streams followed at once; beyond, the oldest is given up as it is.
const MAX_STREAMS: usize = 256;
/// Largest header block (HEADERS + CONTINUATION) kept for decoding.
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// HPACK dynamic table size accepted from either side.
const MAX_TABLE: usize = 64 << 10;

#[derive(Debug, Default)]
struct Half {
    msg: Message,
    headers_seen: bool,
    done: bool,
}

#[derive(Debug, Default)]
struct Stream {
    halves: [Half; 2], // request, response
    order: u64,
}

/// A header block being gathered from HEADERS/PUSH_PROMISE + CONTINUATION.
#[derive(Debug)]
struct Block {
    stream: u32,
    bytes: Vec<u8>,
    end_stream: bool,
    /// A PUSH_PROMISE: decoded only to keep the HPACK table in step.
    promise: bool,
}

/// HPACK state of one direction.
struct Side {
    frames: FrameReader,
    hpack: loona_hpack::Decoder<'static>,
    /// The dynamic table cannot be trusted (an error): no more decoding.
    broken: bool,
    block: Option<Block>,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Side").field("broken", &self.broken).finish_non_exhaustive()
    }
}

impl Side {
    fn new() -> Self {
        let mut hpack = loona_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(MAX_TABLE);
        Self { frames: FrameReader::new(), hpack, broken: false, block: None }
    }
}

/// HTTP/2 state of one connection.
#[derive(Debug)]
pub struct Http2Session {
    sides: [Side; 2], // request (client→server), response
    preface_left: usize,
    streams: HashMap<u32, Stream>,
    next_order: u64,
    limits: Limits,
}

impl Http2Session {
    /// A session from the connection's first byte: the client preface comes first.
    pub fn new(limits: Limits) -> Self {
        Self {
            sides: [Side::new(), Side::new()],
            preface_left: PREFACE.len(),
            streams: HashMap::new(),
            next_order: 0,
            limits,
        }
    }

    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, mut data: &[u8], ts: u64, out: &mut Vec<HttpOutput>) {
        let side = usize::from(!request_side);
        if side == 0 && self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            self.preface_left -= n;
            data = &data[n..];
        }
        let mut frames = std::mem::take(&mut self.sides[side].frames);
        frames.feed(data, &mut |f| self.on_frame(side, f, ts, out));
        self.sides[side].frames = frames;
    }

    /// Bytes of one direction went missing: frame boundaries and the HPACK
    /// table of that direction are lost, so the connection is not followed
    /// further (false: nothing survives the gap).
    pub fn gap(&mut self, request_side: bool, _len: u64) -> bool {
        let side = &mut self.sides[usize::from(!request_side)];
        side.broken = true;
        side.frames = FrameReader::new();
        side.block = None;
        false
    }

    /// The connection ended: every stream still open comes out as it is
    /// (no HTTP/2 body ends with the connection, so the time is not needed).
    pub fn close(&mut self, _ts: u64, out: &mut Vec<HttpOutput>) {
        let mut open: Vec<(u32, Stream)> = self.streams.drain().collect();
        open.sort_by_key(|(_, s)| s.order);
        for (_, s) in open {
            emit(s, self.limits, out);
        }
    }

    fn on_frame(&mut self, side: usize, f: Frame<'_>, ts: u64, out: &mut Vec<HttpOutput>) {
        match f.kind {
            kind::DATA => {
                let Some(body) = unpad(f.flags, f.payload) else { return };
                let limits = self.limits;
                if let Some(half) = self.half(side, f.stream, ts, out) {
                    let keep = limits.max_body.saturating_sub(half.msg.body.len()).min(body.len());
                    half.msg.body.extend_from_slice(&body[..keep]);
                    half.msg.body_truncated += (body.len() - keep) as u64;
                    half.msg.end_ts = ts;
                }
                if f.flags & flag::END_STREAM != 0 {
                    self.end_half(side, f.stream, ts, out);
                }
            }
            kind::HEADERS | kind::PUSH_PROMISE => {
                let Some(mut block) = unpad(f.flags, f.payload) else { return };
                let promise = f.kind == kind::PUSH_PROMISE;
                if promise {
                    block = block.get(4..).unwrap_or(&[]); // promised stream id
                } else if f.flags & flag::PRIORITY != 0 {
                    block = block.get(5..).unwrap_or(&[]);
                }
                let b = Block {
                    stream: f.stream,
                    bytes: block.to_vec(),
                    end_stream: !promise && f.flags & flag::END_STREAM != 0,
                    promise,
                };
                if f.flags & flag::END_HEADERS != 0 {
                    self.on_block(side, b, ts, out);
                } else {
                    self.sides[side].block = Some(b);
                }
            }
            kind::CONTINUATION => {
                let Some(mut b) = self.sides[side].block.take() else { return };
                if b.stream != f.stream || b.bytes.len() + f.payload.len() > MAX_HEADER_BLOCK {
                    self.sides[side].broken = true; // the table can no longer be followed
                    return;
                }
                b.bytes.extend_from_slice(f.payload);
                if f.flags & flag::END_HEADERS != 0 {
                    self.on_block(side, b, ts, out);
                } else {
                    self.sides[side].block = Some(b);
                }
            }
            kind::RST_STREAM => {
                if let Some(s) = self.streams.remove(&f.stream) {
                    emit(s, self.limits, out);
                }
            }
            kind::SETTINGS | kind::GOAWAY => {} // nothing the parser needs
            _ => {}                             // PING, WINDOW_UPDATE, PRIORITY, unknown: ignored
        }
    }

    /// A whole header block of `side`.
    fn on_block(&mut self, side: usize, b: Block, ts: u64, out: &mut Vec<HttpOutput>) {
        let decoded = if self.sides[side].broken {
            None
        } else {
            match self.sides[side].hpack.decode(&b.bytes) {
                Ok(h) => Some(h),
                Err(_) => {
                    self.sides[side].broken = true;
                    None
                }
            }
        };
        if b.promise {
            return;
        }
        let Some(half) = self.half(side, b.stream, ts, out) else { return };
        match decoded {
            None => half.msg.head.headers_incomplete = true,
            Some(fields) => {
                let trailers = half.headers_seen;
                let head = &mut half.msg.head;
                for (name, value) in fields {
                    let (name, value) = (
                        String::from_utf8_lossy(&name).into_owned(),
                        String::from_utf8_lossy(&value).into_owned(),
                    );
                    match name.as_str() {
                        ":method" if !trailers => head.method = value.clone(),
                        ":path" if !trailers => head.target = value.clone(),
                        ":status" if !trailers => head.status = value.parse().unwrap_or(0),
                        _ => {}
                    }
                    head.headers.push((name, value));
                }
                // An interim response (1xx) is followed by the real one.
                if side == 1 && (100..200).contains(&head.status) && !trailers {
                    *head = Head { version: Version::H2, ..Head::default() };
                    return;
                }
            }
        }
        half.headers_seen = true;
        half.msg.end_ts = ts;
        if b.end_stream {
            self.end_half(side, b.stream, ts, out);
        }
    }

    /// The half of `stream` that `side` sends, creating the stream (when
    /// too many are open, the oldest comes out as it is).
    fn half(&mut self, side: usize, stream: u32, ts: u64, out: &mut Vec<HttpOutput>) -> Option<&mut Half> {
        if stream == 0 {
            return None;
        }
        if !self.streams.contains_key(&stream) && self.streams.len() >= MAX_STREAMS {
            let oldest = self.streams.iter().min_by_key(|(_, s)| s.order).map(|(id, _)| *id);
            if let Some(s) = oldest.and_then(|id| self.streams.remove(&id)) {
                emit(s, self.limits, out);
            }
        }
        let order = self.next_order;
        let s = self.streams.entry(stream).or_insert_with(|| Stream { order, ..Stream::default() });
        if s.order == order {
            self.next_order += 1;
        }
        let half = &mut s.halves[side];
        if !half.headers_seen && half.msg.body.is_empty() && half.msg.start_ts == 0 {
            half.msg.start_ts = ts;
            half.msg.head.version = Version::H2;
        }
        Some(half)
    }

    fn end_half(&mut self, side: usize, stream: u32, ts: u64, out: &mut Vec<HttpOutput>) {
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.halves[side].done = true;
        s.halves[side].msg.end_ts = ts;
        if s.halves.iter().all(|h| h.done) {
            let s = self.streams.remove(&stream).expect("present");
            emit(s, self.limits, out);
        }
    }
}

/// A DATA/HEADERS/PUSH_PROMISE payload without its padding.
fn unpad(flags: u8, p: &[u8]) -> Option<&[u8]> {
    if flags & flag::PADDED == 0 {
        return Some(p);
    }
    let pad = usize::from(*p.first()?);
    p.len().checked_sub(1 + pad).map(|n| &p[1..1 + n])
}

/// A stream as an exchange: the response is `None` if it never began.
fn emit(s: Stream, limits: Limits, out: &mut Vec<HttpOutput>) {
    let [mut req, mut resp] = s.halves;
    if !req.headers_seen && req.msg.body.is_empty() {
        return; // nothing of a request (a stream we joined after its start)
    }
    req.msg.decode_content(limits.max_body);
    let response = resp.headers_seen.then(|| {
        resp.msg.decode_content(limits.max_body);
        resp.msg
    });
    out.push(HttpOutput::Exchange(Box::new(Exchange::new(req.msg, response))));
}

#[cfg(test)]
mod tests {
    use super::super::frame::tests::frame;
    use super::*;

    fn exchanges(out: &[HttpOutput]) -> Vec<&Exchange> {
        out.iter().filter_map(|o| if let HttpOutput::Exchange(e) = o { Some(&**e) } else { None }).collect()
    }

    fn headers(enc: &mut loona_hpack::Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
        enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// A client and server conversation: two requests (one with a body and
    /// padding, split over CONTINUATION), answers with trailers.
    fn conversation() -> (Vec<u8>, Vec<u8>) {
        let (mut ce, mut se) = (loona_hpack::Encoder::new(), loona_hpack::Encoder::new());
        let mut c = PREFACE.to_vec();
        c.extend(frame(kind::SETTINGS, 0, 0, &[]));
        let h1 = headers(
            &mut ce,
            &[(":method", "GET"), (":path", "/a"), (":authority", "h.test"), (":scheme", "https")],
        );
        c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &h1));
        let h3 = headers(
            &mut ce,
            &[(":method", "POST"), (":path", "/b"), (":authority", "h.test"), ("content-type", "text/plain")],
        );
        let (first, rest) = h3.split_at(3);
        c.extend(frame(kind::HEADERS, 0, 3, first));
        c.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 3, rest));
        let mut padded = vec![2u8];
        padded.extend(b"hello");
        padded.extend([0, 0]);
        c.extend(frame(kind::DATA, flag::PADDED | flag::END_STREAM, 3, &padded));

        let mut s = frame(kind::SETTINGS, 0, 0, &[]);
        let r3 = headers(&mut se, &[(":status", "201"), ("content-type", "text/plain")]);
        s.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &r3));
        s.extend(frame(kind::DATA, 0, 3, b"got "));
        s.extend(frame(kind::DATA, 0, 3, b"hello"));
        let t3 = headers(&mut se, &[("grpc-status", "0")]);
        s.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &t3));
        let r1 = headers(&mut se, &[(":status", "200")]);
        s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &r1));
        s.extend(frame(kind::DATA, flag::END_STREAM, 1, b"A"));
        (c, s)
    }

    #[test]
    fn streams_pair_into_exchanges_with_decoded_headers_bodies_and_trailers() {
        let (c, s) = conversation();
        let mut h = Http2Session::new(Limits::default());
        let mut out = Vec::new();
        h.feed(true, &c, 1, &mut out);
        h.feed(false, &s, 2, &mut out);
        let ex = exchanges(&out);
        assert_eq!(ex.len(), 2);
        let (b, a) = (ex[0], ex[1]); // /b ends first
        assert_eq!((b.request.head.method.as_str(), b.request.head.target.as_str()), ("POST", "/b"));
        assert_eq!(b.request.head.version, Version::H2);
        assert_eq!(b.request.head.header(":authority"), Some("h.test"));
        assert_eq!(b.request.body, b"hello");
        let r = b.response.as_ref().unwrap();
        assert_eq!(r.head.status, 201);
        assert_eq!(r.body, b"got hello");
        assert_eq!(r.head.header("grpc-status"), Some("0"), "trailers follow the headers");
        assert_eq!(
            (a.request.head.target.as_str(), a.response.as_ref().unwrap().body.as_slice()),
            ("/a", &b"A"[..])
        );
    }

    #[test]
    fn any_split_of_the_conversation_parses_the_same() {
        let (c, s) = conversation();
        let whole = {
            let mut h = Http2Session::new(Limits::default());
            let mut out = Vec::new();
            h.feed(true, &c, 0, &mut out);
            h.feed(false, &s, 0, &mut out);
            format!("{out:?}")
        };
        for cut in 0..c.len() {
            let mut h = Http2Session::new(Limits::default());
            let mut out = Vec::new();
            h.feed(true, &c[..cut], 0, &mut out);
            h.feed(true, &c[cut..], 0, &mut out);
            h.feed(false, &s, 0, &mut out);
            assert_eq!(format!("{out:?}"), whole, "client bytes split at {cut}");
        }
        for cut in 0..s.len() {
            let mut h = Http2Session::new(Limits::default());
            let mut out = Vec::new();
            h.feed(true, &c, 0, &mut out);
            h.feed(false, &s[..cut], 0, &mut out);
            h.feed(false, &s[cut..], 0, &mut out);
            assert_eq!(format!("{out:?}"), whole, "server bytes split at {cut}");
        }
    }

    #[test]
    fn undecodable_headers_are_said_incomplete_and_resets_end_streams() {
        let mut h = Http2Session::new(Limits::default());
        let mut out = Vec::new();
        let mut c = PREFACE.to_vec();
        // Index 200 of an empty dynamic table: an HPACK error.
        c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &[0xff, 0x49]));
        h.feed(true, &c, 1, &mut out);
        h.feed(false, &frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]), 2, &mut out);
        let ex = exchanges(&out);
        assert_eq!(ex.len(), 1);
        assert!(ex[0].request.head.headers_incomplete);
        assert!(ex[0].request.head.method.is_empty(), "never guessed");
        assert!(ex[0].response.is_none());
    }

    #[test]
    fn open_streams_are_bounded_and_come_out_at_close() {
        let mut h = Http2Session::new(Limits::default());
        let mut enc = loona_hpack::Encoder::new();
        let mut c = PREFACE.to_vec();
        for i in 0..(MAX_STREAMS as u32 + 10) {
            let block = headers(&mut enc, &[(":method", "GET"), (":path", "/x")]);
            c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1 + 2 * i, &block));
        }
        let mut out = Vec::new();
        h.feed(true, &c, 1, &mut out);
        assert!(h.streams.len() <= MAX_STREAMS);
        assert_eq!(exchanges(&out).len(), 10, "the oldest come out unanswered");
        h.close(2, &mut out);
        assert_eq!(exchanges(&out).len(), MAX_STREAMS + 10);
    }
}

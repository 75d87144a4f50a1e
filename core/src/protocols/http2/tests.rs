//! Whole-connection tests of the HTTP/2 session: conversations written by
//! an HPACK encoder and the frame helper, fed in every split.

use super::frame::tests::frame;
use super::frame::{flag, kind, PREFACE};
use super::Http2Session;
use crate::protocols::exchange::{Exchange, Fields, HttpOutput, Limits, Version};
use loona_hpack::Encoder;

fn exchanges(out: &[HttpOutput]) -> Vec<&Exchange> {
    out.iter().filter_map(|o| if let HttpOutput::Exchange(e) = o { Some(&**e) } else { None }).collect()
}

fn drops(out: &[HttpOutput]) -> Vec<(&'static str, u64)> {
    out.iter()
        .filter_map(
            |o| if let HttpOutput::Drop { reason, bytes } = o { Some((*reason, *bytes)) } else { None },
        )
        .collect()
}

fn block(enc: &mut Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn fields(f: &Fields) -> Vec<(&str, &str)> {
    f.iter().collect()
}

/// A client and server conversation: a GET, and a POST whose headers span
/// HEADERS and CONTINUATION and whose body is padded, answered with a body
/// in two DATA frames and trailers.
fn conversation() -> (Vec<u8>, Vec<u8>) {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = PREFACE.to_vec();
    c.extend(frame(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
    let h1 = block(
        &mut ce,
        &[(":method", "GET"), (":path", "/a"), (":authority", "h.test"), (":scheme", "https")],
    );
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &h1));
    let h3 = block(
        &mut ce,
        &[(":method", "POST"), (":path", "/b"), (":authority", "h.test"), ("content-type", "text/plain")],
    );
    let (first, rest) = h3.split_at(3);
    c.extend(frame(kind::HEADERS, 0, 3, first));
    c.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 3, rest));
    let padded = [&[2u8][..], b"hello", &[0, 0]].concat();
    c.extend(frame(kind::DATA, flag::PADDED | flag::END_STREAM, 3, &padded));
    c.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));

    let mut s = frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    s.extend(frame(kind::SETTINGS, flag::ACK, 0, &[]));
    let r3 = block(&mut se, &[(":status", "201"), ("content-type", "text/plain")]);
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &r3));
    s.extend(frame(kind::DATA, 0, 3, b"got "));
    s.extend(frame(kind::DATA, 0, 3, b"hello"));
    let t3 = block(&mut se, &[("x-checksum", "42")]);
    s.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &t3));
    let r1 = block(&mut se, &[(":status", "200")]);
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &r1));
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, b"A"));
    s.extend(frame(kind::PING, 0, 0, &[0; 8]));
    s.extend(frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
    (c, s)
}

fn run(parts: &[(bool, &[u8])]) -> Vec<HttpOutput> {
    let mut h = Http2Session::new(Limits::default());
    let mut out = Vec::new();
    for (i, (request, bytes)) in parts.iter().enumerate() {
        h.feed(*request, bytes, i as u64 + 1, &mut out);
    }
    h.close(99, &mut out);
    out
}

#[test]
fn streams_pair_into_exchanges_with_decoded_headers_bodies_and_trailers() {
    let (c, s) = conversation();
    let out = run(&[(true, &c), (false, &s)]);
    assert!(drops(&out).is_empty(), "{out:?}");
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    let (b, a) = (ex[0], ex[1]); // /b ends first
    assert_eq!((b.request.head.method.as_str(), b.request.head.target.as_str()), ("POST", "/b"));
    assert_eq!(b.request.head.version, Version::H2);
    assert_eq!(b.request.head.authority(), Some("h.test"));
    assert_eq!(b.request.body, b"hello");
    assert!(!b.request.head.headers_incomplete);
    let r = b.response.as_ref().unwrap();
    assert_eq!((r.head.status, r.body.as_slice()), (201, &b"got hello"[..]));
    assert_eq!(fields(&r.head.headers), [(":status", "201"), ("content-type", "text/plain")]);
    assert_eq!(fields(&r.trailers), [("x-checksum", "42")]);
    assert_eq!(b.latency_ns(), Some(1), "request at 1, response's end at 2");
    assert_eq!(a.request.head.target, "/a");
    assert_eq!(a.response.as_ref().unwrap().body, b"A");
    assert_eq!(a.reset, None);
}

/// Property: however each direction is cut (every cut point of each, the
/// two directions interleaved), the exchanges are the same.
#[test]
fn any_split_of_the_conversation_parses_the_same() {
    let (c, s) = conversation();
    // Timestamps differ with the number of pieces: compare without them.
    let strip = |out: Vec<HttpOutput>| {
        let mut out = out;
        for o in &mut out {
            if let HttpOutput::Exchange(e) = o {
                for m in std::iter::once(&mut e.request).chain(e.response.as_mut()) {
                    (m.start_ts, m.end_ts) = (0, 0);
                }
            }
        }
        // Exchanges come out as they end, which depends on the interleaving.
        let mut all: Vec<String> = out.iter().map(|o| format!("{o:?}")).collect();
        all.sort();
        all
    };
    let whole_stripped = strip(run(&[(true, &c), (false, &s)]));
    assert_eq!(exchanges(&run(&[(true, &c), (false, &s)])).len(), 2);
    for i in 0..=c.len() {
        for j in (0..=s.len()).step_by(3) {
            let got = run(&[(true, &c[..i]), (false, &s[..j]), (true, &c[i..]), (false, &s[j..])]);
            assert_eq!(strip(got), whole_stripped, "client cut at {i}, server at {j}");
        }
    }
    for i in 0..=c.len() {
        for j in i..=c.len() {
            let got = run(&[(true, &c[..i]), (true, &c[i..j]), (true, &c[j..]), (false, &s)]);
            assert_eq!(strip(got), whole_stripped, "client cut at {i} and {j}");
        }
    }
}

#[test]
fn undecodable_headers_are_said_incomplete_and_resets_end_streams() {
    let mut c = PREFACE.to_vec();
    // :method GET, then index 70 of an empty dynamic table: an HPACK error.
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &[0x82, 0xc6]));
    let out = run(&[(true, &c), (false, &frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]))]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert!(ex[0].request.head.headers_incomplete);
    assert_eq!(ex[0].request.head.method, "GET", "decoded before the error");
    assert!(ex[0].request.head.target.is_empty(), "never guessed");
    assert!(ex[0].response.is_none());
    assert_eq!(ex[0].reset, Some(8));
}

#[test]
fn interim_responses_push_promises_and_content_encoding() {
    use std::io::Write;
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = PREFACE.to_vec();
    let req = block(&mut ce, &[(":method", "GET"), (":path", "/page"), ("accept-encoding", "gzip")]);
    c.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &req));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"unzipped").unwrap();
    let mut s =
        frame(kind::HEADERS, flag::END_HEADERS, 1, &block(&mut se, &[(":status", "103"), ("link", "</s>")]));
    let promise = [&[0, 0, 0, 2][..], &block(&mut se, &[(":method", "GET"), (":path", "/s")])].concat();
    s.extend(frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &promise));
    let resp = block(&mut se, &[(":status", "200"), ("content-encoding", "gzip")]);
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &resp));
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, &gz.finish().unwrap()));
    s.extend(frame(kind::HEADERS, flag::END_HEADERS, 2, &block(&mut se, &[(":status", "200")])));
    s.extend(frame(kind::DATA, flag::END_STREAM, 2, b"pushed"));
    let out = run(&[(true, &c), (false, &s)]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2, "{out:?}");
    let r = ex[0].response.as_ref().unwrap();
    assert_eq!((r.head.status, r.body.as_slice()), (200, &b"unzipped"[..]));
    assert_eq!(r.head.header("content-encoding"), Some("gzip"), "kept");
    assert_eq!(ex[1].request.head.target, "/s");
    assert_eq!(ex[1].response.as_ref().unwrap().body, b"pushed");
}

#[test]
fn open_streams_and_held_bodies_are_bounded_with_drops() {
    let mut enc = Encoder::new();
    let mut c = PREFACE.to_vec();
    let n = 256 + 10;
    for i in 0..n {
        let b = block(&mut enc, &[(":method", "POST"), (":path", "/x")]);
        c.extend(frame(kind::HEADERS, flag::END_HEADERS, 1 + 2 * i, &b));
    }
    // A late body for the first stream, given up by now.
    c.extend(frame(kind::DATA, 0, 1, b"late"));
    let limits = Limits { max_head: 1024, max_body: 1000 };
    let mut h = Http2Session::new(limits);
    let mut out = Vec::new();
    h.feed(true, &c, 1, &mut out);
    assert_eq!(exchanges(&out).len(), 10, "the oldest come out unanswered");
    let d = drops(&out);
    assert_eq!(d.iter().filter(|(r, _)| *r == "http2_streams_over_limit").count(), 11);
    assert!(d.contains(&("http2_streams_over_limit", 4)), "the late body is a drop");
    // Bodies: at most 4 × max_body held across the open streams.
    out.clear();
    for i in 10..20u32 {
        h.feed(true, &frame(kind::DATA, 0, 1 + 2 * i, &[b'x'; 900]), 2, &mut out);
    }
    h.close(3, &mut out);
    let kept: usize = exchanges(&out).iter().map(|e| e.request.body.len()).sum();
    let cut: u64 = exchanges(&out).iter().map(|e| e.request.body_truncated).sum();
    assert_eq!((kept, cut), (4000, 9000 - 4000));
}

#[test]
fn gaps_inside_bodies_are_counted_and_elsewhere_forget_the_table() {
    let (c, s) = conversation();
    let mut h = Http2Session::new(Limits::default());
    let mut out = Vec::new();
    h.feed(true, &c, 1, &mut out);
    // Server bytes up to 2 bytes into "hello" (the 2nd DATA of stream 3), then 2 missing.
    let at = s.windows(5).position(|w| w == b"hello").unwrap();
    h.feed(false, &s[..at + 2], 2, &mut out);
    assert!(h.gap(false, 2, 2, &mut out));
    h.feed(false, &s[at + 4..], 3, &mut out);
    let ex = exchanges(&out);
    let r = ex[0].response.as_ref().unwrap();
    assert_eq!((r.body.as_slice(), r.body_truncated), (&b"got heo"[..], 2));
    assert_eq!(fields(&r.trailers), [("x-checksum", "42")], "the table survived");

    // A gap across frame headers: the boundaries are found again; the
    // next block referring to the lost table is incomplete.
    let mut ce = Encoder::new();
    let get = [(":method", "GET"), (":path", "/a"), ("x-long", "abcdefghij")];
    let frames: Vec<Vec<u8>> = [1u32, 3, 5]
        .iter()
        .map(|&id| frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, id, &block(&mut ce, &get)))
        .collect();
    let c = [PREFACE, &frames[0], &frames[1], &frames[2]].concat();
    // Stream 3's frame lost from its 5th byte on.
    let at = PREFACE.len() + frames[0].len() + 5;
    let mut h = Http2Session::new(Limits::default());
    let mut out = Vec::new();
    h.feed(true, &c[..at], 1, &mut out);
    assert!(!h.gap(true, (frames[1].len() - 5) as u64, 1, &mut out));
    h.feed(true, &c[at + frames[1].len() - 5..], 2, &mut out);
    h.close(3, &mut out);
    let ex = exchanges(&out);
    let heads: Vec<(&str, &str, bool)> = ex
        .iter()
        .map(|e| {
            (
                e.request.head.method.as_str(),
                e.request.head.target.as_str(),
                e.request.head.headers_incomplete,
            )
        })
        .collect();
    // Stream 5's block refers to entries stream 1's block indexed, which
    // the table forgot with the gap: what decodes is right, the rest missing.
    assert_eq!(heads, [("GET", "/a", false), ("GET", "/a", true)]);
    let missing = &ex[1].request.head.headers;
    assert!(missing.len() < 3 && missing.iter().all(|(n, v)| get.contains(&(n, v))));
}

#[test]
fn joined_midstream_frames_are_found_and_roles_learnt() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    // Before joining: both tables got entries the session never sees.
    let _ = block(&mut ce, &[("x-before", "1")]);
    let _ = block(&mut se, &[("x-server-before", "1")]);
    // Joined inside a DATA frame of the server (the direction fed as request).
    let mut s = frame(kind::DATA, 0, 1, &[7; 100])[40..].to_vec();
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, b"tail"));
    let r3 = block(&mut se, &[(":status", "404"), ("x-server-before", "1")]);
    s.extend(frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &r3));
    let h3 = block(&mut ce, &[(":method", "GET"), (":path", "/new"), ("x-before", "1")]);
    let c = frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &h3);
    let mut h = Http2Session::midstream(Limits::default());
    let mut out = Vec::new();
    h.feed(true, &s, 1, &mut out); // roles unknown: guessed wrong
    h.feed(false, &c, 2, &mut out);
    h.close(3, &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2, "{out:?}");
    // Stream 3: the request's literal fields decoded, the reference to the
    // unknown table missing; the answer likewise.
    let e3 = ex.iter().find(|e| e.request.head.target == "/new").expect("stream 3");
    assert_eq!(e3.request.head.method, "GET");
    assert!(e3.request.head.headers_incomplete);
    let r = e3.response.as_ref().unwrap();
    assert_eq!((r.head.status, r.head.headers_incomplete), (404, true));
    // Stream 1 began before the join: its request is unknown, its answer's body partial.
    let e1 = ex.iter().find(|e| e.request.head.target.is_empty()).expect("stream 1");
    assert!(e1.request.head.headers_incomplete);
    assert!(e1.response.as_ref().unwrap().body.ends_with(b"tail"));
    assert_eq!(drops(&out), [("http2_unframed", 109 - 40)], "the rest of the first DATA frame");
}

#[test]
fn oversized_header_table_settings_and_blocks_are_drops() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(kind::SETTINGS, 0, 0, &[0, 1, 0, 0x10, 0, 0])); // 1 MiB table
    c.extend(frame(kind::HEADERS, flag::END_STREAM, 1, &[0x82; 600]));
    c.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, &[0x82; 600]));
    let mut h = Http2Session::new(Limits { max_head: 1000, max_body: 100 });
    let mut out = Vec::new();
    h.feed(true, &c, 1, &mut out);
    h.close(2, &mut out);
    assert_eq!(drops(&out), [("http2_header_table_over_limit", 0), ("http2_header_block_over_limit", 1200)]);
    assert!(exchanges(&out)[0].request.head.headers_incomplete);
}

#[test]
fn a_no_error_reset_after_the_answer_keeps_the_request_body_in_flight() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = PREFACE.to_vec();
    let post = block(&mut ce, &[(":method", "POST"), (":path", "/echo")]);
    c.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &post));
    let mut s = frame(kind::HEADERS, flag::END_HEADERS, 1, &block(&mut se, &[(":status", "200")]));
    s.extend(frame(kind::DATA, flag::END_STREAM, 1, b"early answer"));
    s.extend(frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 0]));
    let body = frame(kind::DATA, flag::END_STREAM, 1, b"sent anyway");
    let next =
        frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, &block(&mut ce, &[(":method", "GET")]));
    // The body in flight ends the request.
    let out = run(&[(true, &c), (false, &s), (true, &body)]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].request.body.as_slice(), ex[0].reset), (&b"sent anyway"[..], Some(0)));
    assert_eq!(ex[0].response.as_ref().unwrap().body, b"early answer");
    // The client stopped: its next stream ends the drained one.
    let mut h = Http2Session::new(Limits::default());
    let mut out = Vec::new();
    h.feed(true, &c, 1, &mut out);
    h.feed(false, &s, 2, &mut out);
    h.feed(true, &next, 3, &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1, "stream 3 still waits for its answer");
    assert_eq!((ex[0].request.head.target.as_str(), ex[0].request.body.len()), ("/echo", 0));
    // Any other reset ends the stream at once.
    let mut s2 = s.clone();
    let at = s2.len() - 1;
    s2[at] = 8; // CANCEL
    assert_eq!(exchanges(&run(&[(true, &c), (false, &s2)]))[0].reset, Some(8));
}

use super::super::bson::encode::{doc, V};
use super::super::message::encode::{compress, message, msg_body, op_msg};
use super::super::message::{EXHAUST_ALLOWED, MORE_TO_COME, OP_QUERY, OP_REPLY};
use super::*;
use serde_json::json;

fn limits() -> Limits {
    Limits { max_head: 1024, max_body: 1024 }
}

fn exchanges(out: &[DbOutput]) -> Vec<&MongoExchange> {
    out.iter()
        .filter_map(|o| match o {
            DbOutput::Exchange(e) => match &**e {
                DbExchange::Mongodb(m) => Some(m),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn drops(out: &[DbOutput]) -> Vec<(&'static str, u64)> {
    out.iter()
        .filter_map(|o| match o {
            DbOutput::Drop { reason, bytes } => Some((*reason, *bytes)),
            _ => None,
        })
        .collect()
}

fn doc_json(m: &Message) -> serde_json::Value {
    serde_json::to_value(m.document.as_ref().unwrap()).unwrap()
}

fn find(id: i32) -> Vec<u8> {
    op_msg(
        id,
        0,
        0,
        &doc(&[("find", V::S("people")), ("filter", V::D(doc(&[("age", V::I(36))]))), ("$db", V::S("test"))]),
    )
}

fn reply(id: i32, to: i32, flags: u32) -> Vec<u8> {
    let batch = doc(&[("0", V::D(doc(&[("_id", V::I(1)), ("name", V::S("ada"))])))]);
    let cursor = doc(&[("firstBatch", V::D(batch)), ("id", V::L(0)), ("ns", V::S("test.people"))]);
    let mut b = doc(&[("cursor", V::D(cursor)), ("ok", V::F(1.0))]);
    // The batch is an array (type 4), not a document.
    let at = b.windows(11).position(|w| w == b"firstBatch\0").unwrap();
    b[at - 1] = 4;
    op_msg(id, to, flags, &b)
}

#[test]
fn replies_pair_by_request_id_out_of_order_and_split_anywhere() {
    let (q1, q2) = (find(7), find(8));
    let (r2, r1) = (reply(100, 8, 0), reply(101, 7, 0));
    let requests = [q1, q2].concat();
    let replies = [r2, r1].concat();
    for cut in 0..requests.len().max(replies.len()) {
        let mut s = MongoSession::new(limits());
        let mut out = Vec::new();
        let (a, b) = requests.split_at(cut.min(requests.len()));
        s.feed(true, a, 1, &mut out);
        s.feed(true, b, 2, &mut out);
        let (a, b) = replies.split_at(cut.min(replies.len()));
        s.feed(false, a, 3, &mut out);
        s.feed(false, b, 4, &mut out);
        let e = exchanges(&out);
        assert_eq!(e.len(), 2, "cut {cut}: {out:?}");
        assert_eq!((e[0].request.request_id, e[1].request.request_id), (8, 7));
        let q = &e[1].request;
        assert_eq!(
            (q.command.as_deref(), q.database.as_deref(), q.collection.as_deref()),
            (Some("find"), Some("test"), Some("people"))
        );
        assert_eq!(doc_json(&q.message), json!({"find": "people", "filter": {"age": 36}, "$db": "test"}));
        let r = e[1].response.as_ref().unwrap();
        assert_eq!(
            doc_json(&r.message),
            json!({"cursor": {"firstBatch": [{"_id": 1, "name": "ada"}], "id": 0, "ns": "test.people"}, "ok": 1.0})
        );
        assert_eq!(e[1].ok(), Some(1.0));
        assert!(drops(&out).is_empty() && s.synced());
    }
}

#[test]
fn more_to_come_requests_get_no_reply_and_exhaust_replies_pair_with_the_request() {
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    let w0 = op_msg(1, 0, MORE_TO_COME, &doc(&[("insert", V::S("c")), ("$db", V::S("d"))]));
    s.feed(true, &w0, 1, &mut out);
    let e = exchanges(&out);
    assert_eq!((e.len(), e[0].response.is_none()), (1, true));
    assert_eq!(e[0].summary(), ("insert d.c".to_string(), "no reply asked".to_string()));
    out.clear();
    s.feed(
        true,
        &op_msg(
            2,
            0,
            EXHAUST_ALLOWED,
            &doc(&[("getMore", V::L(5)), ("collection", V::S("c")), ("$db", V::S("d"))]),
        ),
        2,
        &mut out,
    );
    s.feed(false, &reply(50, 2, MORE_TO_COME), 3, &mut out);
    s.feed(false, &reply(51, 50, MORE_TO_COME), 4, &mut out);
    s.feed(false, &reply(52, 51, 0), 5, &mut out);
    let e = exchanges(&out);
    assert_eq!(e.len(), 3, "{out:?}");
    assert!(e.iter().all(|e| e.request.request_id == 2 && e.request.command.as_deref() == Some("getMore")));
    assert!(e.iter().all(|e| e.request.collection.as_deref() == Some("c") && e.response.is_some()));
    assert_eq!(e.iter().map(|e| e.latency_ns().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(s.pending.is_empty() && drops(&out).is_empty());
}

#[test]
fn auth_payloads_are_never_kept() {
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    let payload: &[u8] = b"\0alice\0s3cret-pw";
    let start = doc(&[
        ("saslStart", V::I(1)),
        ("mechanism", V::S("PLAIN")),
        ("payload", V::Bin(payload)),
        ("$db", V::S("admin")),
    ]);
    s.feed(true, &op_msg(1, 0, 0, &start), 1, &mut out);
    let answer = doc(&[
        ("conversationId", V::I(1)),
        ("done", V::B(true)),
        ("payload", V::Bin(b"server-proof")),
        ("ok", V::F(1.0)),
    ]);
    s.feed(false, &op_msg(2, 1, 0, &answer), 2, &mut out);
    let spec = doc(&[("saslStart", V::I(1)), ("payload", V::Bin(b"n,,n=alice,r=nonce"))]);
    let hello = doc(&[("hello", V::I(1)), ("speculativeAuthenticate", V::D(spec)), ("$db", V::S("admin"))]);
    s.feed(true, &op_msg(3, 0, 0, &hello), 3, &mut out);
    let create = doc(&[("createUser", V::S("bob")), ("pwd", V::S("hunter2")), ("$db", V::S("admin"))]);
    s.feed(true, &op_msg(4, 0, MORE_TO_COME, &create), 4, &mut out);
    s.close(5, &mut out);
    let text = serde_json::to_string(
        &exchanges(&out)
            .iter()
            .flat_map(|e| std::iter::once(&e.request.message).chain(e.response.as_ref().map(|r| &r.message)))
            .map(doc_json)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for secret in ["s3cret", "server-proof", "nonce", "hunter2", "AGFsaWNl"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(text.matches(r#"{"$omitted":"auth"}"#).count(), 4, "{text}");
    assert!(text.contains(r#""mechanism":"PLAIN""#));
}

#[test]
fn the_legacy_handshake_and_compressed_messages_pair() {
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    let mut q = 0u32.to_le_bytes().to_vec();
    q.extend(b"admin.$cmd\0");
    q.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    q.extend(doc(&[("isMaster", V::I(1)), ("compression", V::S("zlib"))]));
    s.feed(true, &message(1, 0, OP_QUERY, &q), 1, &mut out);
    let mut r = 8u32.to_le_bytes().to_vec();
    r.extend([0; 8]);
    r.extend([0, 0, 0, 0, 1, 0, 0, 0]);
    r.extend(doc(&[("ismaster", V::B(true)), ("ok", V::F(1.0))]));
    s.feed(false, &message(2, 1, OP_REPLY, &r), 2, &mut out);
    s.feed(true, &compress(&find(3), 2), 3, &mut out);
    s.feed(false, &compress(&reply(4, 3, 0), 1), 4, &mut out);
    let e = exchanges(&out);
    assert_eq!(e.len(), 2, "{out:?}");
    assert_eq!(
        (
            e[0].request.command.as_deref(),
            e[0].request.database.as_deref(),
            e[0].request.collection.as_deref()
        ),
        (Some("isMaster"), Some("admin"), None)
    );
    assert_eq!(e[0].response.as_ref().unwrap().message.op, Op::Reply);
    assert_eq!(e[0].ok(), Some(1.0));
    assert_eq!(
        (e[1].request.message.compressor, e[1].request.collection.as_deref()),
        (Some("zlib"), Some("people"))
    );
    assert_eq!(e[1].response.as_ref().unwrap().message.compressor, Some("snappy"));
    assert_eq!(e[1].ok(), Some(1.0));
}

#[test]
fn garbage_is_a_counted_drop_and_the_direction_resynchronises() {
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    s.feed(true, b"\x01\x00\x00\x00garbage-garbage!tail", 1, &mut out);
    assert_eq!(drops(&out), [("mongodb_parse_error", 16)]);
    assert!(matches!(out.last(), Some(DbOutput::Raw(r)) if *r == (16..24)));
    out.clear();
    s.feed(true, b"more garbage", 2, &mut out);
    assert!(matches!(&out[..], [DbOutput::Raw(r)] if *r == (0..12)));
    out.clear();
    s.feed(true, &find(9), 3, &mut out);
    s.feed(false, &reply(10, 9, 0), 4, &mut out);
    assert_eq!(exchanges(&out).len(), 1, "{out:?}");
    // A reply nobody asked for is counted.
    out.clear();
    s.feed(false, &reply(11, 77, 0), 5, &mut out);
    assert_eq!(drops(&out), [("mongodb_unpaired_response", reply(11, 77, 0).len() as u64)]);
}

#[test]
fn a_gap_loses_the_direction_until_a_message_starts() {
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    let q = find(1);
    s.feed(true, &q[..10], 1, &mut out);
    assert!(!s.gap(true, 5, 2, &mut out));
    s.feed(true, &q[15..], 3, &mut out);
    assert!(matches!(&out[..], [DbOutput::Raw(_)]));
    out.clear();
    s.feed(true, &find(2), 4, &mut out);
    s.feed(false, &reply(3, 2, 0), 5, &mut out);
    assert_eq!(exchanges(&out).len(), 1);
    // Joined mid-stream: replies before any request pass on raw.
    let mut m = MongoSession::midstream(limits());
    out.clear();
    m.feed(false, &reply(3, 2, 0), 1, &mut out);
    assert!(matches!(&out[..], [DbOutput::Raw(_)]));
    m.feed(true, &find(4), 2, &mut out);
    m.feed(false, &reply(5, 4, 0), 3, &mut out);
    assert_eq!(exchanges(&out).len(), 1);
}

#[test]
fn a_message_over_the_bound_keeps_its_head_and_counts_the_rest() {
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    let big = "x".repeat(10_000);
    let body = doc(&[("insert", V::S("blobs")), ("$db", V::S("d"))]);
    let q = message(
        1,
        0,
        super::super::message::OP_MSG,
        &msg_body(0, &body, &[("documents", &[doc(&[("v", V::S(&big))])])]),
    );
    for piece in q.chunks(700) {
        s.feed(true, piece, 1, &mut out);
    }
    let kept = s.max_message;
    assert_eq!(drops(&out), [("mongodb_message_over_limit", (q.len() - HEADER - kept) as u64)]);
    s.close(2, &mut out);
    let e = exchanges(&out);
    assert_eq!(
        (e[0].request.collection.as_deref(), e[0].request.message.undecoded),
        (Some("blobs"), Some("message over the bound"))
    );
    let d = e[0].request.message.document.as_ref().unwrap();
    assert!(matches!(d.get("documents"), Some(super::super::bson::Bson::Array(a)) if a.len() == 1));
}

#[test]
fn pending_requests_are_bounded() {
    let mut s = MongoSession::new(Limits::default());
    let mut out = Vec::new();
    for id in 1..=(MAX_PENDING as i32 + 3) {
        s.feed(true, &find(id), 1, &mut out);
    }
    assert_eq!(s.pending.len(), MAX_PENDING);
    assert_eq!(drops(&out).len(), 3);
    assert_eq!(exchanges(&out).iter().map(|e| e.request.request_id).collect::<Vec<_>>(), [1, 2, 3]);
    // And by their bytes: four largest messages' worth.
    let mut s = MongoSession::new(limits());
    out.clear();
    let big = "x".repeat(3000);
    let insert =
        |id| op_msg(id, 0, 0, &doc(&[("insert", V::S("c")), ("pad", V::S(&big)), ("$db", V::S("d"))]));
    let per = insert(1).len() as u64;
    let fit = (MAX_PENDING_MESSAGES * s.max_message as u64 / per) as i32;
    for id in 1..=fit + 2 {
        s.feed(true, &insert(id), 1, &mut out);
    }
    assert_eq!((s.pending.len() as i32, drops(&out).len()), (fit, 2));
    assert_eq!(s.pending_bytes, fit as u64 * per);
}

#[test]
fn named_fields_are_redacted_at_any_depth_by_the_redactor() {
    use crate::redact::{Redactor, DEFAULT_FIELDS, DEFAULT_HEADERS};
    let mut s = MongoSession::new(limits());
    let mut out = Vec::new();
    let user = doc(&[("name", V::S("ada")), ("password", V::S("hunter2")), ("token", V::I(42))]);
    s.feed(
        true,
        &op_msg(1, 0, 0, &doc(&[("insert", V::S("users")), ("doc", V::D(user)), ("$db", V::S("d"))])),
        1,
        &mut out,
    );
    s.feed(false, &op_msg(2, 1, 0, &doc(&[("ok", V::F(1.0)), ("secret", V::S("shh"))])), 2, &mut out);
    let [DbOutput::Exchange(e)] = &mut out[..] else { panic!("{out:?}") };
    let r = Redactor::new(DEFAULT_HEADERS, DEFAULT_FIELDS, b"test key");
    r.db(e);
    let DbExchange::Mongodb(m) = &**e else { unreachable!() };
    assert_eq!(
        doc_json(&m.request.message),
        json!({"insert": "users", "doc": {"name": "ada", "password": r.marker(b"hunter2"), "token": r.marker(b"42")}, "$db": "d"})
    );
    assert_eq!(
        doc_json(&m.response.as_ref().unwrap().message),
        json!({"ok": 1.0, "secret": r.marker(b"shh")})
    );
}

use super::*;
use crate::protocols::kafka::batch::encode;

/// Builds message bodies field by field (`flexible`: compact forms).
struct W(Vec<u8>, bool);

impl W {
    fn new(flexible: bool) -> Self {
        W(Vec::new(), flexible)
    }
    fn i8(mut self, v: i8) -> Self {
        self.0.push(v as u8);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn uvarint(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn len(self, n: Option<usize>, wide: bool) -> Self {
        match (self.1, n) {
            (true, n) => self.uvarint(n.map_or(0, |n| n as u64 + 1)),
            (false, None) if wide => self.i32(-1),
            (false, None) => self.i16(-1),
            (false, Some(n)) if wide => self.i32(n as i32),
            (false, Some(n)) => self.i16(n as i16),
        }
    }
    fn str(self, s: Option<&str>) -> Self {
        let mut w = self.len(s.map(str::len), false);
        w.0.extend(s.unwrap_or_default().as_bytes());
        w
    }
    fn bytes(self, b: &[u8]) -> Self {
        let mut w = self.len(Some(b.len()), true);
        w.0.extend(b);
        w
    }
    fn count(self, n: usize) -> Self {
        if self.1 {
            self.uvarint(n as u64 + 1)
        } else {
            self.i32(n as i32)
        }
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    fn tags(self) -> Self {
        if self.1 {
            self.uvarint(0)
        } else {
            self
        }
    }
}

fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend(body);
    f
}

fn request(key: i16, version: i16, corr: i32, body: W) -> Vec<u8> {
    let flex = crate::protocols::kafka::flexible(key, version);
    let head = W::new(false).i16(key).i16(version).i32(corr).str(Some("client-1"));
    let head = if flex { head.uvarint(0) } else { head };
    frame(head.raw(&body.0).0)
}

fn response(corr: i32, flexible_header: bool, body: W) -> Vec<u8> {
    let head = W::new(false).i32(corr);
    let head = if flexible_header { head.uvarint(0) } else { head };
    frame(head.raw(&body.0).0)
}

const TOPIC_ID: [u8; 16] = [7; 16];

/// A Java client's conversation: ApiVersions v4, Metadata v12, Produce v9
/// (gzip) and v13 (topic id), Fetch v12; every request answered.
fn conversation() -> Vec<(bool, Vec<u8>)> {
    let batch = encode::batch(
        0,
        1000,
        1,
        &[(Some(b"k1"), Some(b"v1"), &[("trace", b"t1")]), (None, Some(&[0xff]), &[])],
    );
    let plain = encode::batch(0, 1000, 0, &[(Some(b"k2"), Some(b"v2"), &[])]);
    let fetched = encode::batch(5, 1000, 0, &[(Some(b"k1"), Some(b"v1"), &[("trace", b"t1")])]);
    let f = true;
    vec![
        (true, request(18, 4, 1, W::new(f).str(Some("apache-kafka-java")).str(Some("4.1.1")).tags())),
        (false, response(1, false, W::new(f).i16(0).count(1).i16(3).i16(0).i16(13).tags().i32(0).tags())),
        (
            true,
            request(
                3,
                12,
                2,
                W::new(f).count(1).raw(&TOPIC_ID).str(Some("orders")).tags().i8(1).i8(0).tags(),
            ),
        ),
        (
            false,
            response(
                2,
                true,
                W::new(f)
                    .i32(0)
                    .count(1)
                    .i32(1)
                    .str(Some("127.0.0.1"))
                    .i32(9092)
                    .str(None)
                    .tags()
                    .str(Some("cluster"))
                    .i32(1)
                    .count(1)
                    .i16(0)
                    .str(Some("orders"))
                    .raw(&TOPIC_ID)
                    .i8(0)
                    .count(1)
                    .i16(0)
                    .i32(0)
                    .i32(1)
                    .i32(0)
                    .count(1)
                    .i32(1)
                    .count(1)
                    .i32(1)
                    .count(0)
                    .tags()
                    .i32(0)
                    .tags()
                    .tags(),
            ),
        ),
        (
            true,
            request(
                0,
                9,
                3,
                W::new(f)
                    .str(None)
                    .i16(-1)
                    .i32(30000)
                    .count(1)
                    .str(Some("orders"))
                    .count(1)
                    .i32(0)
                    .bytes(&batch)
                    .tags()
                    .tags()
                    .tags(),
            ),
        ),
        (
            false,
            response(
                3,
                true,
                W::new(f)
                    .count(1)
                    .str(Some("orders"))
                    .count(1)
                    .i32(0)
                    .i16(0)
                    .i64(5)
                    .i64(-1)
                    .i64(0)
                    .count(0)
                    .str(None)
                    .tags()
                    .tags()
                    .i32(0)
                    .tags(),
            ),
        ),
        (
            true,
            request(
                0,
                13,
                4,
                W::new(f)
                    .str(None)
                    .i16(1)
                    .i32(30000)
                    .count(1)
                    .raw(&TOPIC_ID)
                    .count(1)
                    .i32(0)
                    .bytes(&plain)
                    .tags()
                    .tags()
                    .tags(),
            ),
        ),
        (
            false,
            response(
                4,
                true,
                W::new(f)
                    .count(1)
                    .raw(&TOPIC_ID)
                    .count(1)
                    .i32(0)
                    .i16(0)
                    .i64(7)
                    .i64(-1)
                    .i64(0)
                    .count(0)
                    .str(None)
                    .tags()
                    .tags()
                    .i32(0)
                    .tags(),
            ),
        ),
        (
            true,
            request(
                1,
                12,
                5,
                W::new(f)
                    .i32(-1)
                    .i32(500)
                    .i32(1)
                    .i32(1 << 20)
                    .i8(0)
                    .i32(0)
                    .i32(-1)
                    .count(1)
                    .str(Some("orders"))
                    .count(1)
                    .i32(0)
                    .i32(0)
                    .i64(5)
                    .i32(-1)
                    .i64(-1)
                    .i32(1 << 20)
                    .tags()
                    .tags()
                    .count(0)
                    .str(Some(""))
                    .tags(),
            ),
        ),
        (
            false,
            response(
                5,
                true,
                W::new(f)
                    .i32(0)
                    .i16(0)
                    .i32(0)
                    .count(1)
                    .str(Some("orders"))
                    .count(1)
                    .i32(0)
                    .i16(0)
                    .i64(6)
                    .i64(6)
                    .i64(0)
                    .len(None, false)
                    .i32(-1)
                    .bytes(&fetched)
                    .tags()
                    .tags()
                    .tags(),
            ),
        ),
    ]
}

fn run(
    session: &mut KafkaSession,
    steps: &[(bool, Vec<u8>)],
    split: usize,
) -> (Vec<KafkaExchange>, Vec<DbOutput>) {
    let mut out = Vec::new();
    for (i, (req, bytes)) in steps.iter().enumerate() {
        for (j, piece) in bytes.chunks(split.max(1)).enumerate() {
            session.feed(*req, piece, (i * 100 + j) as u64, &mut out);
        }
    }
    session.close(10_000, &mut out);
    let mut exchanges = Vec::new();
    let mut rest = Vec::new();
    for o in out {
        match o {
            DbOutput::Exchange(e) => match *e {
                DbExchange::Kafka(k) => exchanges.push(k),
                other => panic!("{other:?}"),
            },
            o => rest.push(o),
        }
    }
    (exchanges, rest)
}

#[test]
fn a_java_clients_conversation_pairs_and_decodes_at_every_split() {
    let steps = conversation();
    let longest = steps.iter().map(|s| s.1.len()).max().unwrap();
    for split in [longest, 1, 2, 3, 5, 7, 13] {
        let (ex, rest) = run(&mut KafkaSession::new(Limits::default()), &steps, split);
        assert!(rest.is_empty(), "split {split}: {rest:?}");
        let apis: Vec<_> =
            ex.iter().map(|e| (e.api(), e.request.correlation_id, e.response.is_some())).collect();
        assert_eq!(
            apis,
            [
                ("ApiVersions".into(), 1, true),
                ("Metadata".into(), 2, true),
                ("Produce".into(), 3, true),
                ("Produce".into(), 4, true),
                ("Fetch".into(), 5, true)
            ],
            "split {split}"
        );
        assert!(
            ex.iter()
                .all(|e| e.request.undecoded.is_none() && e.response.as_ref().unwrap().undecoded.is_none()),
            "{ex:#?}"
        );
        assert_eq!(ex[0].request.client_id.as_deref(), Some("client-1"));
        assert_eq!(ex[0].request.body.client_software, Some(("apache-kafka-java".into(), "4.1.1".into())));
        assert_eq!(ex[0].response.as_ref().unwrap().body.api_versions, vec![(3, 0, 13)]);
        assert_eq!(ex[1].response.as_ref().unwrap().body.brokers[0].port, 9092);
        let produce = &ex[2].request.body.topics.as_ref().unwrap()[0];
        assert_eq!(produce.name.as_deref(), Some("orders"));
        let set = produce.partitions[0].records.as_ref().unwrap();
        assert_eq!(
            (set.records.len(), set.compression.clone(), set.producer_id),
            (2, vec!["gzip"], Some(1000))
        );
        assert_eq!(set.records[0].headers, vec![("trace".into(), Some(b"t1".to_vec()))]);
        assert_eq!(ex[2].response.as_ref().unwrap().body.topics[0].partitions[0].base_offset, Some(5));
        // v13 names its topic by id; this connection's Metadata named it.
        let by_id = &ex[3].request.body.topics.as_ref().unwrap()[0];
        assert_eq!((by_id.name.as_deref(), by_id.topic_id), (Some("orders"), Some(TOPIC_ID)));
        assert_eq!(ex[3].response.as_ref().unwrap().body.topics[0].name.as_deref(), Some("orders"));
        let fetch = &ex[4].request.body.topics.as_ref().unwrap()[0].partitions[0];
        assert_eq!(fetch.fetch_offset, Some(5));
        let got = &ex[4].response.as_ref().unwrap().body.topics[0].partitions[0];
        let rec = &got.records.as_ref().unwrap().records[0];
        assert_eq!(
            (rec.offset, rec.key.as_deref(), rec.value.as_deref()),
            (5, Some(&b"k1"[..]), Some(&b"v1"[..]))
        );
        if split == longest {
            assert_eq!(ex[2].latency_ns(), Some(100));
        }
    }
}

#[test]
fn acks_0_is_written_at_once_and_unanswered_requests_at_close() {
    let batch = encode::batch(0, -1, 0, &[(None, Some(b"x"), &[])]);
    let acks0 = request(
        0,
        8,
        9,
        W::new(false).str(None).i16(0).i32(100).count(1).str(Some("t")).count(1).i32(0).bytes(&batch),
    );
    let mut s = KafkaSession::new(Limits::default());
    let mut out = Vec::new();
    s.feed(true, &acks0, 1, &mut out);
    let [DbOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
    let DbExchange::Kafka(e) = &**e else { panic!() };
    assert_eq!((e.response.is_none(), e.summary().1.as_str()), (true, "acks=0"));
    out.clear();
    s.feed(
        true,
        &request(12, 4, 10, W::new(true).str(Some("g")).i32(1).str(Some("m")).str(None).tags()),
        2,
        &mut out,
    );
    assert!(out.is_empty());
    s.close(3, &mut out);
    let [DbOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
    let DbExchange::Kafka(e) = &**e else { panic!() };
    assert_eq!((e.api(), e.response.is_none()), ("Heartbeat".into(), true));
}

#[test]
fn garbage_is_counted_and_a_later_request_resynchronises() {
    let steps = conversation();
    let mut s = KafkaSession::new(Limits::default());
    let mut out = Vec::new();
    s.feed(true, &steps[0].1, 1, &mut out);
    s.feed(false, &steps[1].1, 2, &mut out);
    assert_eq!(out.len(), 1);
    out.clear();
    s.feed(true, b"\xff\xff\xff\xffnot kafka", 3, &mut out);
    assert_eq!(out, vec![DbOutput::Drop { reason: "kafka_parse_error", bytes: 4 }, DbOutput::Raw(4..13)]);
    out.clear();
    s.feed(true, b"more garbage", 4, &mut out);
    assert_eq!(out, vec![DbOutput::Raw(0..12)]);
    out.clear();
    s.feed(true, &steps[2].1, 5, &mut out);
    s.feed(false, &steps[3].1, 6, &mut out);
    let [DbOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
    let DbExchange::Kafka(e) = &**e else { panic!() };
    assert_eq!((e.api(), e.response.is_some()), ("Metadata".into(), true));
}

#[test]
fn joined_mid_stream_responses_wait_for_a_request() {
    let steps = conversation();
    let mut s = KafkaSession::midstream(Limits::default());
    let mut out = Vec::new();
    // The tail of a response to a request sent before the join.
    s.feed(false, &steps[1].1[3..], 1, &mut out);
    assert_eq!(out, vec![DbOutput::Raw(0..steps[1].1.len() - 3)]);
    out.clear();
    s.feed(true, &steps[2].1, 2, &mut out);
    s.feed(false, &steps[3].1, 3, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
}

fn outline(out: &[DbOutput]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            DbOutput::Exchange(e) => match &**e {
                DbExchange::Kafka(k) => {
                    let undecoded = k.response.as_ref().and_then(|r| r.undecoded).unwrap_or("");
                    format!("{} {} {undecoded}", k.api(), k.response.is_some()).trim().to_string()
                }
                _ => unreachable!(),
            },
            DbOutput::Raw(_) => "raw".into(),
            DbOutput::Drop { reason, .. } => reason.to_string(),
        })
        .collect()
}

#[test]
fn a_gap_in_a_size_loses_the_response_and_the_next_pairs() {
    let steps = conversation();
    let mut s = KafkaSession::new(Limits::default());
    let mut out = Vec::new();
    s.feed(true, &steps[0].1, 1, &mut out);
    s.feed(false, &steps[1].1[..2], 2, &mut out);
    assert!(!s.gap(false, 5, 3, &mut out));
    s.feed(false, &steps[1].1[7..], 4, &mut out);
    s.feed(true, &steps[2].1, 5, &mut out);
    s.feed(false, &steps[3].1, 6, &mut out);
    assert_eq!(outline(&out), ["ApiVersions false", "raw", "Metadata true"]);
}

#[test]
fn a_gap_inside_a_frame_keeps_the_pairing_and_says_what_was_not_captured() {
    let steps = conversation();
    let mut s = KafkaSession::new(Limits::default());
    let mut out = Vec::new();
    s.feed(true, &steps[0].1, 1, &mut out);
    s.feed(false, &steps[1].1[..10], 2, &mut out);
    assert!(s.gap(false, 5, 3, &mut out));
    s.feed(false, &steps[1].1[15..], 4, &mut out);
    assert_eq!(outline(&out), ["ApiVersions true bytes not captured"]);
    // A broker's fetch response whose stored batch went by sendfile: the
    // partition's fields are read, its records said not captured.
    out.clear();
    for (req, bytes) in &steps[2..9] {
        s.feed(*req, bytes, 5, &mut out);
    }
    let fetch = &steps[9].1;
    let batch_len = encode::batch(5, 1000, 0, &[(Some(b"k1"), Some(b"v1"), &[("trace", b"t1")])]).len();
    let records_at = fetch.len() - 3 - batch_len;
    s.feed(false, &fetch[..records_at], 6, &mut out);
    assert!(s.gap(false, batch_len as u64, 7, &mut out));
    s.feed(false, &fetch[records_at + batch_len..], 8, &mut out);
    let DbOutput::Exchange(e) = out.last().unwrap() else { panic!("{out:?}") };
    let DbExchange::Kafka(e) = &**e else { panic!() };
    let r = e.response.as_ref().unwrap();
    assert_eq!((e.api(), r.undecoded), ("Fetch".into(), None));
    let p = &r.body.topics[0].partitions[0];
    assert_eq!(p.high_watermark, Some(6));
    let set = p.records.as_ref().unwrap();
    assert_eq!(
        (set.records.len(), set.undecoded_reason, set.bytes),
        (0, Some("bytes not captured"), batch_len as u64)
    );
}

#[test]
fn sasl_v0_tokens_are_never_kept() {
    let mut s = KafkaSession::new(Limits::default());
    let mut out = Vec::new();
    s.feed(true, &request(17, 0, 1, W::new(false).str(Some("PLAIN"))), 1, &mut out);
    s.feed(false, &response(1, false, W::new(false).i16(0).count(1).str(Some("PLAIN"))), 2, &mut out);
    s.feed(true, &frame(b"\0user\0secret-password".to_vec()), 3, &mut out);
    s.feed(false, &frame(Vec::new()), 4, &mut out);
    s.feed(true, &request(18, 0, 2, W::new(false)), 5, &mut out);
    s.feed(false, &response(2, false, W::new(false).i16(0).count(0)), 6, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(!format!("{out:?}").contains("secret"));
}

/// A client learns a topic's id on one connection and produces by id on
/// another: sessions sharing a table name it there; a session with a table
/// of its own cannot.
#[test]
fn topic_ids_learnt_on_one_connection_name_them_on_another() {
    let steps = conversation();
    assert_eq!(steps.iter().map(|s| s.0).collect::<Vec<_>>(), [true, false].repeat(5), "request, response");
    let (metadata, produce_by_id) = (&steps[..4], &steps[6..8]);
    let shared = TopicNames::default();
    let (ex, _) =
        run(&mut KafkaSession::new(Limits::default()).with_topics(shared.clone()), metadata, 1 << 20);
    assert_eq!(ex[1].api(), "Metadata");
    let name = |s: &mut KafkaSession| {
        let (ex, _) = run(s, produce_by_id, 1 << 20);
        let topic = &ex[0].request.body.topics.as_ref().unwrap()[0];
        assert_eq!(topic.topic_id, Some(TOPIC_ID));
        topic.name.clone()
    };
    assert_eq!(name(&mut KafkaSession::new(Limits::default()).with_topics(shared)), Some("orders".into()));
    assert_eq!(name(&mut KafkaSession::new(Limits::default())), None);
}

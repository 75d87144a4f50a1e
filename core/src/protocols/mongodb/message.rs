//! One message's body: OP_MSG sections (the kind 0 body, kind 1 document
//! sequences merged into it as the array fields they stand for, the
//! optional checksum), OP_QUERY and OP_REPLY of the legacy handshake, and
//! OP_COMPRESSED (snappy, zlib, zstd) unwrapped to the message inside.
//! Other opcodes (removed from servers since 5.1/6.0) are named, not decoded.

use super::bson::{self, Bson, Doc};
use super::Header;

/// OP_REPLY (legacy replies).
pub const OP_REPLY: i32 = 1;
/// OP_QUERY (legacy; drivers still send their first hello with it).
pub const OP_QUERY: i32 = 2004;
/// OP_COMPRESSED.
pub const OP_COMPRESSED: i32 = 2012;
/// OP_MSG.
pub const OP_MSG: i32 = 2013;

/// OP_MSG flag: a CRC-32C follows the sections.
pub const CHECKSUM_PRESENT: u32 = 1;
/// OP_MSG flag: the sender will not wait for an answer (a request), or
/// more replies follow without a request (a reply).
pub const MORE_TO_COME: u32 = 2;
/// OP_MSG flag: the client accepts replies with moreToCome.
pub const EXHAUST_ALLOWED: u32 = 1 << 16;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// OP_MSG.
    Msg,
    /// OP_QUERY.
    Query,
    /// OP_REPLY.
    Reply,
    /// Another opcode (legacy writes, getMore, killCursors, …).
    Other(i32),
}

impl Op {
    fn of(code: i32) -> Op {
        match code {
            OP_MSG => Op::Msg,
            OP_QUERY => Op::Query,
            OP_REPLY => Op::Reply,
            n => Op::Other(n),
        }
    }

    /// The opcode's name (`OP_MSG`, …; `op_<n>` for one not decoded).
    pub fn name(self) -> String {
        match self {
            Op::Msg => "OP_MSG".into(),
            Op::Query => "OP_QUERY".into(),
            Op::Reply => "OP_REPLY".into(),
            Op::Other(2001) => "OP_UPDATE".into(),
            Op::Other(2002) => "OP_INSERT".into(),
            Op::Other(2005) => "OP_GET_MORE".into(),
            Op::Other(2006) => "OP_DELETE".into(),
            Op::Other(2007) => "OP_KILL_CURSORS".into(),
            Op::Other(n) => format!("op_{n}"),
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The opcode (of the message inside, when compressed).
    pub op: Op,
    /// OP_MSG flags (OP_QUERY's and OP_REPLY's flags for those).
    pub flags: u32,
    /// The body: OP_MSG's kind 0 section with any document sequences as
    /// array fields; OP_QUERY's query; OP_REPLY's first document.
    pub document: Option<Doc>,
    /// OP_REPLY's documents after the first.
    pub more_documents: Vec<Doc>,
    /// OP_QUERY's full collection name (`admin.$cmd`).
    pub full_collection: Option<String>,
    /// The compressor, when the message came in OP_COMPRESSED.
    pub compressor: Option<&'static str>,
    /// Why the body was not (wholly) decoded, when it was not.
    pub undecoded: Option<&'static str>,
}

impl Message {
    fn new(op: Op) -> Self {
        Message {
            op,
            flags: 0,
            document: None,
            more_documents: Vec::new(),
            full_collection: None,
            compressor: None,
            undecoded: None,
        }
    }

    /// A flag of OP_MSG.
    pub fn flag(&self, bit: u32) -> bool {
        self.op == Op::Msg && self.flags & bit != 0
    }
}

/// Decodes a message from its header and the body bytes kept (`cut`: the
/// body went on past them). Decompressed bodies stay within `max`.
pub fn decode(h: &Header, body: &[u8], cut: bool, max: usize) -> Message {
    let mut m = if h.op_code == OP_COMPRESSED {
        compressed(body, cut, max)
    } else {
        plain(Op::of(h.op_code), body, cut)
    };
    if cut && m.undecoded.is_none() {
        m.undecoded = Some("message over the bound");
    }
    m
}

fn compressed(body: &[u8], cut: bool, max: usize) -> Message {
    let mut m = Message::new(Op::Other(OP_COMPRESSED));
    let (Some(original), Some(size), Some(&id)) = (body.get(..4), body.get(4..8), body.get(8)) else {
        m.undecoded = Some("short OP_COMPRESSED header");
        return m;
    };
    m.op = Op::of(i32::from_le_bytes(original.try_into().expect("4 bytes")));
    let size = u32::from_le_bytes(size.try_into().expect("4 bytes")) as usize;
    let codec = match id {
        0 => "noop",
        1 => "snappy",
        2 => "zlib",
        3 => "zstd",
        _ => {
            m.undecoded = Some("unknown compressor");
            return m;
        }
    };
    m.compressor = Some(codec);
    if cut {
        m.undecoded = Some("message over the bound");
        return m;
    }
    if size > max {
        m.undecoded = Some("uncompressed message over the bound");
        return m;
    }
    let data = &body[9..];
    let inflated = match codec {
        "noop" => Ok(data.to_vec()),
        _ => crate::protocols::kafka::batch::inflate(codec, data, size),
    };
    match inflated {
        Ok(b) => {
            let inner = plain(m.op, &b, false);
            Message { compressor: m.compressor, ..inner }
        }
        Err(why) => {
            m.undecoded = Some(why);
            m
        }
    }
}

fn plain(op: Op, body: &[u8], cut: bool) -> Message {
    let mut m = Message::new(op);
    let Some(flags) = body.get(..4) else {
        m.undecoded = Some("short body");
        return m;
    };
    m.flags = u32::from_le_bytes(flags.try_into().expect("4 bytes"));
    let rest = &body[4..];
    match op {
        Op::Msg => msg(&mut m, rest, cut),
        Op::Query => query(&mut m, rest),
        Op::Reply => reply(&mut m, rest),
        Op::Other(_) => m.undecoded = Some("opcode not decoded"),
    }
    m
}

/// OP_MSG's sections, after the flags.
fn msg(m: &mut Message, mut rest: &[u8], cut: bool) {
    if m.flags & CHECKSUM_PRESENT != 0 && !cut {
        rest = &rest[..rest.len().saturating_sub(4)];
    }
    let mut body: Option<Doc> = None;
    let mut sequences = Vec::new();
    while let Some((&kind, after)) = rest.split_first() {
        match kind {
            0 => {
                let Some((d, len)) = bson::document(after) else { break };
                body = Some(d);
                rest = &after[len.min(after.len())..];
            }
            1 => {
                let Some(size) = after.get(..4) else { break };
                let size = i32::from_le_bytes(size.try_into().expect("4 bytes"));
                let Ok(size) = usize::try_from(size) else { break };
                let section = &after[..size.min(after.len())];
                rest = &after[size.min(after.len())..];
                let Some(name_len) = section.get(4..).and_then(|s| s.iter().position(|&b| b == 0)) else {
                    break;
                };
                let name = String::from_utf8_lossy(&section[4..4 + name_len]).into_owned();
                let mut docs = &section[4 + name_len + 1..];
                let mut items = Vec::new();
                while let Some((d, len)) = bson::document(docs) {
                    items.push(Bson::Document(d));
                    docs = &docs[len.min(docs.len())..];
                }
                sequences.push((name, items));
            }
            _ => {
                m.undecoded = Some("unknown section kind");
                break;
            }
        }
    }
    let mut body = body.unwrap_or_default();
    for (name, items) in sequences {
        body.fields.push((name, Bson::Array(items)));
    }
    if body.fields.is_empty() && m.undecoded.is_none() {
        m.undecoded = Some("no body section");
    }
    m.document = Some(body);
}

/// OP_QUERY after its flags: collection name, skip, limit, query.
fn query(m: &mut Message, rest: &[u8]) {
    let Some(end) = rest.iter().position(|&b| b == 0) else {
        m.undecoded = Some("short OP_QUERY");
        return;
    };
    m.full_collection = Some(String::from_utf8_lossy(&rest[..end]).into_owned());
    match rest.get(end + 9..).and_then(bson::document) {
        Some((d, _)) => m.document = Some(d),
        None => m.undecoded = Some("short OP_QUERY"),
    }
}

/// OP_REPLY after its flags: cursor id, starting from, count, documents.
fn reply(m: &mut Message, rest: &[u8]) {
    let Some(mut docs) = rest.get(16..) else {
        m.undecoded = Some("short OP_REPLY");
        return;
    };
    while let Some((d, len)) = bson::document(docs) {
        if m.document.is_none() {
            m.document = Some(d);
        } else {
            m.more_documents.push(d);
        }
        docs = &docs[len.min(docs.len())..];
    }
}

/// Test helpers: messages as drivers and servers write them.
#[cfg(test)]
pub mod encode {
    use super::super::HEADER;
    use super::*;

    /// A whole message with this header and body.
    pub fn message(request_id: i32, response_to: i32, op: i32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((HEADER + body.len()) as i32).to_le_bytes());
        m.extend(request_id.to_le_bytes());
        m.extend(response_to.to_le_bytes());
        m.extend(op.to_le_bytes());
        m.extend(body);
        m
    }

    /// An OP_MSG body: flags, the kind 0 section, kind 1 sequences.
    pub fn msg_body(flags: u32, doc: &[u8], sequences: &[(&str, &[Vec<u8>])]) -> Vec<u8> {
        let mut b = flags.to_le_bytes().to_vec();
        b.push(0);
        b.extend(doc);
        for (name, docs) in sequences {
            let len = 4 + name.len() + 1 + docs.iter().map(Vec::len).sum::<usize>();
            b.push(1);
            b.extend((len as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.push(0);
            docs.iter().for_each(|d| b.extend(d));
        }
        if flags & CHECKSUM_PRESENT != 0 {
            b.extend([0xde, 0xad, 0xbe, 0xef]);
        }
        b
    }

    /// An OP_MSG.
    pub fn op_msg(request_id: i32, response_to: i32, flags: u32, doc: &[u8]) -> Vec<u8> {
        message(request_id, response_to, OP_MSG, &msg_body(flags, doc, &[]))
    }

    /// `inner` (a whole message) as OP_COMPRESSED with compressor `id`.
    pub fn compress(inner: &[u8], id: u8) -> Vec<u8> {
        let h = Header::parse(inner).unwrap();
        let data = &inner[HEADER..];
        let packed = match id {
            1 => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            2 => {
                use std::io::Write;
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(data).unwrap();
                z.finish().unwrap()
            }
            _ => data.to_vec(),
        };
        let mut b = h.op_code.to_le_bytes().to_vec();
        b.extend((data.len() as i32).to_le_bytes());
        b.push(id);
        b.extend(packed);
        message(h.request_id, h.response_to, OP_COMPRESSED, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bson::encode::{doc, V};
    use super::super::HEADER;
    use super::encode::*;
    use super::*;
    use serde_json::json;

    fn decode_whole(m: &[u8]) -> Message {
        let h = Header::parse(m).unwrap();
        decode(&h, &m[HEADER..], false, 1 << 20)
    }

    #[test]
    fn op_msg_sequences_join_the_body_and_the_checksum_is_skipped() {
        let a = doc(&[("_id", V::I(1)), ("name", V::S("ada"))]);
        let b = doc(&[("_id", V::I(2))]);
        let body = doc(&[("insert", V::S("people")), ("ordered", V::B(true)), ("$db", V::S("test"))]);
        for flags in [0, CHECKSUM_PRESENT] {
            let m = message(5, 0, OP_MSG, &msg_body(flags, &body, &[("documents", &[a.clone(), b.clone()])]));
            let d = decode_whole(&m);
            assert_eq!((d.op, d.undecoded, d.flags), (Op::Msg, None, flags));
            assert_eq!(
                serde_json::to_value(d.document.unwrap()).unwrap(),
                json!({"insert": "people", "ordered": true, "$db": "test",
                       "documents": [{"_id": 1, "name": "ada"}, {"_id": 2}]})
            );
        }
    }

    #[test]
    fn legacy_query_and_reply_decode() {
        let mut q = 0u32.to_le_bytes().to_vec();
        q.extend(b"admin.$cmd\0");
        q.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        q.extend(doc(&[("isMaster", V::I(1))]));
        let d = decode_whole(&message(1, 0, OP_QUERY, &q));
        assert_eq!(d.full_collection.as_deref(), Some("admin.$cmd"));
        assert_eq!(d.document.unwrap().first_key(), Some("isMaster"));
        let mut r = 8u32.to_le_bytes().to_vec();
        r.extend([0; 8]);
        r.extend([0, 0, 0, 0, 2, 0, 0, 0]);
        r.extend(doc(&[("ismaster", V::B(true))]));
        r.extend(doc(&[("ok", V::F(1.0))]));
        let d = decode_whole(&message(2, 1, OP_REPLY, &r));
        assert_eq!((d.op, d.flags, d.more_documents.len()), (Op::Reply, 8, 1));
        assert_eq!(d.document.unwrap().first_key(), Some("ismaster"));
    }

    #[test]
    fn compressed_messages_are_unwrapped() {
        let inner = op_msg(9, 0, 0, &doc(&[("find", V::S("c")), ("$db", V::S("d"))]));
        for (id, name) in [(0, "noop"), (1, "snappy"), (2, "zlib")] {
            let d = decode_whole(&compress(&inner, id));
            assert_eq!((d.op, d.compressor, d.undecoded), (Op::Msg, Some(name), None), "{name}");
            assert_eq!(d.document.unwrap().str("$db"), Some("d"));
        }
        let mut bad = compress(&inner, 2);
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        assert!(decode_whole(&bad).undecoded.is_some());
        let mut unknown = compress(&inner, 2);
        unknown[HEADER + 8] = 9;
        assert_eq!(decode_whole(&unknown).undecoded, Some("unknown compressor"));
        let big = compress(&inner, 1);
        let h = Header::parse(&big).unwrap();
        assert_eq!(
            decode(&h, &big[HEADER..], false, 4).undecoded,
            Some("uncompressed message over the bound")
        );
    }

    #[test]
    fn a_cut_message_keeps_its_head() {
        let m = op_msg(3, 0, 0, &doc(&[("insert", V::S("big")), ("pad", V::S(&"x".repeat(200)))]));
        let h = Header::parse(&m).unwrap();
        let d = decode(&h, &m[HEADER..60], true, 1 << 20);
        assert_eq!(d.undecoded, Some("message over the bound"));
        let doc = d.document.unwrap();
        assert_eq!((doc.str("insert"), doc.truncated), (Some("big"), true));
    }
}

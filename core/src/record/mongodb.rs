//! The fields of a `mongodb` record (CONTRACT.md): `request` `{op,
//! request_id, database, command, collection, document}`, `response` `{op,
//! ok, document}`, `latency_ns`. Documents are relaxed Extended JSON in
//! their wire order (OP_MSG document sequences as the array fields they
//! stand for); what was not kept is `{"$omitted": "auth" | "truncated"}`.

use crate::protocols::mongodb::message::{Message, CHECKSUM_PRESENT, EXHAUST_ALLOWED, MORE_TO_COME};
use crate::protocols::mongodb::{MongoExchange, MongoRequest, MongoResponse};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Writes `e`'s own fields into the record's map.
pub(super) fn fields<M: SerializeMap>(m: &mut M, e: &MongoExchange) -> Result<(), M::Error> {
    m.serialize_entry("request", &RequestView(&e.request))?;
    m.serialize_entry("response", &e.response.as_ref().map(|r| ResponseView(r, e.ok())))?;
    m.serialize_entry("latency_ns", &e.latency_ns())
}

/// The message's own fields, common to both halves.
fn message<M: SerializeMap>(m: &mut M, msg: &Message) -> Result<(), M::Error> {
    m.serialize_entry("op", &msg.op.name())?;
    let flags: Vec<&str> = [
        (CHECKSUM_PRESENT, "checksum_present"),
        (MORE_TO_COME, "more_to_come"),
        (EXHAUST_ALLOWED, "exhaust_allowed"),
    ]
    .into_iter()
    .filter(|&(bit, _)| msg.flag(bit))
    .map(|(_, name)| name)
    .collect();
    if !flags.is_empty() {
        m.serialize_entry("flags", &flags)?;
    }
    if let Some(c) = msg.compressor {
        m.serialize_entry("compressor", c)?;
    }
    m.serialize_entry("document", &msg.document)?;
    if !msg.more_documents.is_empty() {
        m.serialize_entry("more_documents", &msg.more_documents)?;
    }
    if let Some(why) = msg.undecoded {
        m.serialize_entry("undecoded", why)?;
    }
    Ok(())
}

struct RequestView<'a>(&'a MongoRequest);

impl Serialize for RequestView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("request_id", &q.request_id)?;
        m.serialize_entry("database", &q.database)?;
        m.serialize_entry("command", &q.command)?;
        m.serialize_entry("collection", &q.collection)?;
        message(&mut m, &q.message)?;
        m.serialize_entry("size", &q.size)?;
        m.end()
    }
}

struct ResponseView<'a>(&'a MongoResponse, Option<f64>);

impl Serialize for ResponseView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ok", &self.1)?;
        message(&mut m, &r.message)?;
        m.serialize_entry("size", &r.size)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::protocols::db::{DbExchange, DbOutput};
    use crate::protocols::exchange::Limits;
    use crate::protocols::mongodb::bson::encode::{doc, V};
    use crate::protocols::mongodb::MongoSession;
    use serde_json::json;

    fn op_msg(id: i32, to: i32, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut m = ((21 + body.len()) as i32).to_le_bytes().to_vec();
        m.extend(id.to_le_bytes());
        m.extend(to.to_le_bytes());
        m.extend(2013i32.to_le_bytes());
        m.extend(flags.to_le_bytes());
        m.push(0);
        m.extend(body);
        m
    }

    #[test]
    fn mongodb_fields() {
        let mut s = MongoSession::new(Limits::default());
        let mut out = Vec::new();
        let q = doc(&[("delete", V::S("people")), ("$db", V::S("test"))]);
        s.feed(true, &op_msg(3, 0, 1 << 16, &q), 10, &mut out);
        let r = doc(&[("n", V::I(0)), ("ok", V::F(0.0)), ("errmsg", V::S("no")), ("code", V::I(2))]);
        s.feed(false, &op_msg(4, 3, 0, &r), 25, &mut out);
        let [DbOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
        assert!(matches!(&**e, DbExchange::Mongodb(_)));
        assert_eq!(e.summary(), ("delete test.people".to_string(), "error (2)".to_string()));
        assert_eq!(
            super::super::db::json(e),
            json!({"request": {"request_id": 3, "database": "test", "command": "delete", "collection": "people",
                               "op": "OP_MSG", "flags": ["exhaust_allowed"],
                               "document": {"delete": "people", "$db": "test"}, "size": 21 + q.len()},
                   "response": {"ok": 0.0, "op": "OP_MSG", "document": {"n": 0, "ok": 0.0, "errmsg": "no", "code": 2},
                                "size": 21 + r.len()},
                   "latency_ns": 15})
        );
    }
}

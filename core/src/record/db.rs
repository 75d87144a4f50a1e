//! The fields of the database and queue kinds (CONTRACT.md: `redis`, …).
//! Binary values follow the body rule: text as a string, anything else as
//! `{"b64": "…"}`; what a bound cut is said beside the value.

use super::Seq;
use crate::protocols::db::DbExchange;
use crate::protocols::mysql::{MyExchange, MyResponse};
use crate::protocols::pgsql::{Cell, PgExchange, PgResponse};
use crate::protocols::redis::{Agg, Blob, RedisExchange, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// `e`'s own fields (`request`, `response`, `latency_ns`, and where the
/// kind has them `database`, `user`) as a JSON object, for the streaming API.
pub fn json(e: &DbExchange) -> serde_json::Value {
    struct Fields<'a>(&'a DbExchange);
    impl Serialize for Fields<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            fields(&mut m, self.0)?;
            m.end()
        }
    }
    serde_json::to_value(Fields(e)).unwrap_or_default()
}

/// Writes `e`'s own fields into the record's map.
pub(super) fn fields<M: SerializeMap>(m: &mut M, e: &DbExchange) -> Result<(), M::Error> {
    match e {
        DbExchange::Redis(r) => redis(m, r),
        DbExchange::Pgsql(p) => pgsql(m, p),
        DbExchange::Mysql(e) => mysql(m, e),
        DbExchange::Kafka(e) => super::kafka::fields(m, e),
        DbExchange::Mongodb(e) => super::mongodb::fields(m, e),
    }
}

fn mysql<M: SerializeMap>(m: &mut M, e: &MyExchange) -> Result<(), M::Error> {
    let q = &e.request;
    let mut request = serde_json::Map::new();
    request.insert("command".into(), q.command.clone().into());
    request.insert("query".into(), q.query.clone().into());
    m.serialize_entry("request", &MyRequestView(e, request))?;
    m.serialize_entry("response", &e.response.as_ref().map(MyResponseView))?;
    m.serialize_entry("latency_ns", &e.latency_ns())?;
    m.serialize_entry("database", &e.database)?;
    m.serialize_entry("user", &e.user)
}

struct MyRequestView<'a>(&'a MyExchange, serde_json::Map<String, serde_json::Value>);

impl Serialize for MyRequestView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in &self.1 {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("params", &Cells(&self.0.request.params))?;
        if let Some(id) = self.0.request.statement_id {
            m.serialize_entry("statement_id", &id)?;
        }
        m.end()
    }
}

struct MyResponseView<'a>(&'a MyResponse);

impl Serialize for MyResponseView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", if r.error.is_some() { "error" } else { "ok" })?;
        m.serialize_entry("columns", &r.columns)?;
        m.serialize_entry("rows", &Seq(r.rows.iter().map(|row| Cells(row))))?;
        m.serialize_entry("rows_truncated", &r.rows_truncated)?;
        m.serialize_entry("affected_rows", &r.affected_rows)?;
        if let Some(id) = r.last_insert_id.filter(|&id| id > 0) {
            m.serialize_entry("last_insert_id", &id)?;
        }
        if let Some(id) = r.statement_id {
            m.serialize_entry("statement_id", &id)?;
        }
        if let Some(e) = &r.error {
            m.serialize_entry(
                "error",
                &serde_json::json!({"code": e.code, "sqlstate": e.sqlstate, "message": e.message}),
            )?;
        }
        m.end()
    }
}

fn pgsql<M: SerializeMap>(m: &mut M, e: &PgExchange) -> Result<(), M::Error> {
    m.serialize_entry("request", &PgRequestView(e))?;
    m.serialize_entry("response", &e.response.as_ref().map(PgResponseView))?;
    m.serialize_entry("latency_ns", &e.latency_ns())?;
    m.serialize_entry("database", &e.database)?;
    m.serialize_entry("user", &e.user)
}

struct PgRequestView<'a>(&'a PgExchange);

impl Serialize for PgRequestView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = &self.0.request;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", q.kind)?;
        m.serialize_entry("query", &q.query)?;
        m.serialize_entry("params", &Cells(&q.params))?;
        if let Some(name) = &q.statement {
            m.serialize_entry("statement", name)?;
        }
        m.end()
    }
}

struct PgResponseView<'a>(&'a PgResponse);

impl Serialize for PgResponseView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", if r.error.is_some() { "error" } else { "ok" })?;
        m.serialize_entry("command_tag", &r.command_tag)?;
        m.serialize_entry("columns", &r.columns)?;
        m.serialize_entry("rows", &Seq(r.rows.iter().map(|row| Cells(row))))?;
        m.serialize_entry("rows_truncated", &r.rows_truncated)?;
        if let Some(e) = &r.error {
            let mut v = serde_json::Map::new();
            v.insert("severity".into(), e.severity.clone().into());
            v.insert("code".into(), e.code.clone().into());
            v.insert("message".into(), e.message.clone().into());
            if let Some(d) = &e.detail {
                v.insert("detail".into(), d.clone().into());
            }
            m.serialize_entry("error", &v)?;
        }
        if let Some((messages, bytes)) = r.copy {
            m.serialize_entry("copy", &serde_json::json!({"messages": messages, "bytes": bytes}))?;
        }
        if let Some(b) = r.ssl {
            m.serialize_entry("ssl", &b.to_string())?;
        }
        m.end()
    }
}

struct Cells<'a>(&'a [Cell]);

impl Serialize for Cells<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(CellView))
    }
}

/// A cell: NULL as null, text as a string, numbers and truths as JSON's,
/// other bytes as `{"b64": …}`.
struct CellView<'a>(&'a Cell);

impl Serialize for CellView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Cell::Null => s.serialize_none(),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Bytes(b) => Bytes(b).serialize(s),
            Cell::Int(n) => s.serialize_i64(*n),
            Cell::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Cell::Float(f) => s.collect_str(f),
            Cell::Bool(b) => s.serialize_bool(*b),
        }
    }
}

fn redis<M: SerializeMap>(m: &mut M, e: &RedisExchange) -> Result<(), M::Error> {
    m.serialize_entry("request", &e.request.as_ref().map(RedisRequest))?;
    m.serialize_entry("response", &e.response.as_ref().map(|r| RedisReply(&r.value)))?;
    m.serialize_entry("latency_ns", &e.latency_ns())
}

struct RedisRequest<'a>(&'a crate::protocols::redis::Request);

impl Serialize for RedisRequest<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.0.command;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("command", &c.name)?;
        m.serialize_entry("args", &Args(&c.args))?;
        if c.args_omitted > 0 {
            m.serialize_entry("args_omitted", &c.args_omitted)?;
        }
        let cut: u64 = c.args.iter().map(|a| a.truncated).sum();
        if cut > 0 {
            m.serialize_entry("truncated_bytes", &cut)?;
        }
        m.end()
    }
}

struct Args<'a>(&'a [Blob]);

impl Serialize for Args<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|b| Bytes(&b.data)))
    }
}

/// `{type, value}`, with `truncated_bytes` / `omitted_items` when bounds cut it.
struct RedisReply<'a>(&'a Value);

impl Serialize for RedisReply<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.0.type_name())?;
        m.serialize_entry("value", &RespValue(self.0))?;
        let (bytes, items) = cut(self.0);
        if bytes > 0 {
            m.serialize_entry("truncated_bytes", &bytes)?;
        }
        if items > 0 {
            m.serialize_entry("omitted_items", &items)?;
        }
        m.end()
    }
}

/// Bytes and items a value lost to the bounds, at any depth.
fn cut(v: &Value) -> (u64, u64) {
    match v {
        Value::Simple(b) | Value::Error(b) | Value::Bulk(b) | Value::BulkError(b) | Value::Verbatim(b) => {
            (b.truncated, 0)
        }
        Value::Array(a) | Value::Set(a) | Value::Map(a) | Value::Push(a) => {
            a.items.iter().map(cut).fold((0, a.omitted), |(b, i), (b2, i2)| (b + b2, i + i2))
        }
        _ => (0, 0),
    }
}

/// A value as JSON: strings by the body rule, numbers as numbers (doubles
/// and big numbers as sent, in strings), aggregates as arrays (a map's keys
/// and values alternate, as on the wire).
struct RespValue<'a>(&'a Value);

impl Serialize for RespValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Simple(b)
            | Value::Error(b)
            | Value::Bulk(b)
            | Value::BulkError(b)
            | Value::Verbatim(b) => Bytes(&b.data).serialize(s),
            Value::Integer(n) => s.serialize_i64(*n),
            Value::Null => s.serialize_none(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Double(t) | Value::BigNumber(t) => s.serialize_str(t),
            Value::Array(Agg { items, .. })
            | Value::Set(Agg { items, .. })
            | Value::Map(Agg { items, .. })
            | Value::Push(Agg { items, .. }) => s.collect_seq(items.iter().map(RespValue)),
        }
    }
}

/// Bytes by the body rule: a string when UTF-8, else `{"b64": …}`.
pub(super) struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "b64",
                    &super::Display(&base64::display::Base64Display::new(
                        self.0,
                        &base64::engine::general_purpose::STANDARD,
                    )),
                )?;
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::redis::{Command, Reply, Request};
    use serde_json::{json, Value as Json};

    fn json_of(e: &DbExchange) -> Json {
        struct W<'a>(&'a DbExchange);
        impl Serialize for W<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                fields(&mut m, self.0)?;
                m.end()
            }
        }
        serde_json::to_value(W(e)).unwrap()
    }

    #[test]
    fn redis_fields() {
        let e = DbExchange::Redis(RedisExchange {
            request: Some(Request {
                command: Command {
                    name: "MSET".into(),
                    args: vec![Blob::new(b"k"), Blob::new(&[0xff, 0])],
                    args_omitted: 0,
                },
                start_ts: 10,
                end_ts: 11,
            }),
            response: Some(Reply {
                value: Value::Array(Agg {
                    items: vec![
                        Value::Integer(3),
                        Value::Null,
                        Value::Bulk(Blob { data: b"ab".to_vec(), truncated: 5 }),
                        Value::Map(Agg {
                            items: vec![Value::Simple(Blob::new(b"k")), Value::Boolean(true)],
                            omitted: 0,
                        }),
                    ],
                    omitted: 2,
                }),
                start_ts: 20,
                end_ts: 25,
            }),
        });
        assert_eq!(
            json_of(&e),
            json!({"request": {"command": "MSET", "args": ["k", {"b64": "/wA="}]},
                   "response": {"type": "array", "value": [3, null, "ab", ["k", true]],
                                "truncated_bytes": 5, "omitted_items": 2},
                   "latency_ns": 15})
        );
        let push = DbExchange::Redis(RedisExchange {
            request: None,
            response: Some(Reply { value: Value::Push(Agg::default()), start_ts: 1, end_ts: 1 }),
        });
        assert_eq!(
            json_of(&push),
            json!({"request": null, "response": {"type": "push", "value": []}, "latency_ns": null})
        );
    }
}

//! A MongoDB exchange as a database span (OpenTelemetry's MongoDB
//! conventions): the command as the operation, the database as the
//! namespace, the collection named; a reply with `ok: 0` is an error with
//! its code. Documents stay in the log record (the JSON Lines bytes).

use super::convert::{kv, server, Parts};
use nettap_core::protocols::mongodb::MongoExchange;
use nettap_core::record::ConnView;

pub(super) fn span(m: &MongoExchange, conn: &ConnView<'_>) -> Parts {
    let q = &m.request;
    let mut a = server(conn, None);
    a.push(kv("db.system", "mongodb"));
    a.push(kv("db.system.name", "mongodb"));
    let operation = q.command.clone().unwrap_or_else(|| q.message.op.name());
    a.push(kv("db.operation.name", operation.as_str()));
    if let Some(db) = &q.database {
        a.push(kv("db.namespace", db.as_str()));
    }
    if let Some(c) = &q.collection {
        a.push(kv("db.collection.name", c.as_str()));
    }
    let mut error = None;
    if m.ok() == Some(0.0) {
        let d = m.response.as_ref().and_then(|r| r.message.document.as_ref());
        let code =
            d.and_then(|d| d.number("code")).map_or_else(|| "0".to_string(), |c| (c as i64).to_string());
        a.push(kv("db.response.status_code", code.as_str()));
        error = Some(d.and_then(|d| d.str("codeName")).map_or(code, str::to_string));
    }
    let name = q.collection.as_ref().map_or_else(|| operation.clone(), |c| format!("{operation} {c}"));
    (name, m.latency_ns(), a, error)
}

#[cfg(test)]
mod tests {
    use super::super::convert::exchange;
    use nettap_core::events::Role;
    use nettap_core::protocols::db::{DbExchange, DbOutput, DbSession};
    use nettap_core::protocols::exchange::Limits;
    use nettap_core::protocols::mongodb::MongoSession;
    use nettap_core::record::{Body, ConnView, Origin, Record};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

    /// An OP_MSG with one body document of string and int fields.
    fn op_msg(id: i32, to: i32, fields: &[(&str, Result<&str, i32>)]) -> Vec<u8> {
        let mut d = Vec::new();
        for (k, v) in fields {
            d.push(if v.is_ok() { 2 } else { 0x10 });
            d.extend(k.as_bytes());
            d.push(0);
            match v {
                Ok(s) => {
                    d.extend((s.len() as i32 + 1).to_le_bytes());
                    d.extend(s.as_bytes());
                    d.push(0);
                }
                Err(n) => d.extend(n.to_le_bytes()),
            }
        }
        let doc_len = (d.len() + 5) as i32;
        let mut m = (21 + doc_len).to_le_bytes().to_vec();
        m.extend(id.to_le_bytes());
        m.extend(to.to_le_bytes());
        m.extend(2013i32.to_le_bytes());
        m.extend([0, 0, 0, 0, 0]);
        m.extend(doc_len.to_le_bytes());
        m.extend(d);
        m.push(0);
        m
    }

    #[test]
    fn a_mongodb_command_is_a_db_span_with_its_collection() {
        let mut s = DbSession::Mongodb(MongoSession::new(Limits::default()));
        let mut out = Vec::new();
        s.feed(true, &op_msg(1, 0, &[("insert", Ok("people")), ("$db", Ok("shop"))]), 10, &mut out);
        let reply =
            [("ok", Err(0)), ("errmsg", Ok("dup")), ("code", Err(11000)), ("codeName", Ok("DuplicateKey"))];
        s.feed(false, &op_msg(2, 1, &reply), 30, &mut out);
        let [DbOutput::Exchange(e)] = &out[..] else { panic!("{out:?}") };
        assert!(matches!(&**e, DbExchange::Mongodb(_)));
        let conn = ConnView {
            id: 1,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:27017".parse().unwrap(),
            role: Role::Client,
            tls: false,
            remote_host: None,
            k8s: None,
            peer: None,
        };
        let r = Record {
            origin: Origin { ts_ns: 5, pid: 7, comm: "python3", source: "kernel", probe: "p" },
            conn: Some(conn),
            body: Body::Db(e),
        };
        let c = exchange(&r, "{}".into()).unwrap();
        let attr = |key: &str| {
            c.span.attributes.iter().find(|k| k.key == key).and_then(|k| k.value.clone()?.value).map(|v| {
                match v {
                    Value::StringValue(s) => s,
                    Value::IntValue(n) => n.to_string(),
                    other => format!("{other:?}"),
                }
            })
        };
        assert_eq!(c.span.name, "insert people");
        assert_eq!(attr("db.system").as_deref(), Some("mongodb"));
        assert_eq!(attr("db.operation.name").as_deref(), Some("insert"));
        assert_eq!(attr("db.namespace").as_deref(), Some("shop"));
        assert_eq!(attr("db.collection.name").as_deref(), Some("people"));
        assert_eq!(attr("db.response.status_code").as_deref(), Some("11000"));
        assert_eq!(attr("server.port").as_deref(), Some("27017"));
        let status = c.span.status.unwrap();
        assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "DuplicateKey"));
        assert_eq!(c.span.end_time_unix_nano - c.span.start_time_unix_nano, 20);
    }
}

//! A record → an OTLP span (OpenTelemetry semantic conventions: HTTP, RPC,
//! database) and a log record carrying the record's JSON Lines bytes, both
//! under a resource naming the process and its pod.

use nettap_core::events::Role;
use nettap_core::pod::PodOf;
use nettap_core::protocols::db::DbExchange;
use nettap_core::protocols::exchange::{Exchange, Version};
use nettap_core::protocols::grpc;
use nettap_core::protocols::kafka::KafkaExchange;
use nettap_core::protocols::redis::Value;
use nettap_core::record::{Body, ConnView, Record};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

/// What one exchange becomes.
#[derive(Debug)]
pub struct Converted {
    /// The span.
    pub span: Span,
    /// The log record: the whole record as JSON, linked to the span.
    pub log: LogRecord,
}

/// The span and log record of an exchange (`http`, `pgsql`, `mysql`,
/// `redis`); `None` for every other kind. `jsonl` is the record's JSON
/// Lines bytes (redacted as the file has them), without the newline.
pub fn exchange(r: &Record<'_>, jsonl: String) -> Option<Converted> {
    let conn = r.conn?;
    let (name, latency, mut attrs, error) = match r.body {
        Body::Http(e) => http(e, &conn),
        Body::Db(e) => db(e, &conn),
        _ => return None,
    };
    attrs.extend(network(&conn));
    let (trace_id, parent) = match r.body {
        Body::Http(e) => traceparent(e).unwrap_or_else(|| (rand::random::<[u8; 16]>().to_vec(), Vec::new())),
        _ => (rand::random::<[u8; 16]>().to_vec(), Vec::new()),
    };
    let span_id = rand::random::<[u8; 8]>().to_vec();
    let start = r.origin.ts_ns;
    let status = match &error {
        Some(e) => Status { message: e.clone(), code: StatusCode::Error as i32 },
        None => Status::default(),
    };
    if let Some(e) = error {
        attrs.push(kv("error.type", e));
    }
    let span = Span {
        trace_id: trace_id.clone(),
        span_id: span_id.clone(),
        parent_span_id: parent,
        name,
        kind: match conn.role {
            Role::Client => SpanKind::Client,
            Role::Server => SpanKind::Server,
            Role::Unknown => SpanKind::Unspecified,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + latency.unwrap_or(0),
        attributes: attrs,
        status: Some(status),
        ..Default::default()
    };
    let log = LogRecord {
        time_unix_nano: start,
        observed_time_unix_nano: nettap_core::clock::Clock::new().now_ns(),
        severity_number: SeverityNumber::Info as i32,
        severity_text: "INFO".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(jsonl)) }),
        attributes: vec![kv("nettap.record.kind", r.kind())],
        trace_id,
        span_id,
        ..Default::default()
    };
    Some(Converted { span, log })
}

pub(super) type Parts = (String, Option<u64>, Vec<KeyValue>, Option<String>);

fn http(e: &Exchange, conn: &ConnView<'_>) -> Parts {
    let req = &e.request.head;
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let method = req.method.as_str();
    let mut a = vec![
        kv("http.request.method", method),
        kv("url.path", path),
        kv("url.scheme", if conn.tls { "https" } else { "http" }),
        kv("network.protocol.name", "http"),
        kv(
            "network.protocol.version",
            match req.version {
                Version::Http10 => "1.0",
                Version::Http11 => "1.1",
                Version::H2 => "2",
            },
        ),
    ];
    if !query.is_empty() {
        a.push(kv("url.query", query));
    }
    if let Some(ua) = req.header("user-agent") {
        a.push(kv("user_agent.original", ua));
    }
    a.extend(server(conn, req.authority()));
    a.push(int("http.request.body.size", e.request.body.len() as u64 + e.request.body_truncated));
    let mut error = None;
    if let Some(resp) = &e.response {
        let status = resp.head.status;
        a.push(int("http.response.status_code", u64::from(status)));
        a.push(int("http.response.body.size", resp.body.len() as u64 + resp.body_truncated));
        // Semantic conventions: 4xx is an error for the client, not the server.
        if status >= 500 || (status >= 400 && conn.role == Role::Client) {
            error = Some(status.to_string());
        }
    } else {
        error = Some(e.reset_name().unwrap_or_else(|| "no_response".into()));
    }
    let name = if grpc::is_grpc(req) {
        let (service, rpc) = grpc::service_method(&req.target).unwrap_or(("", ""));
        a.extend([kv("rpc.system", "grpc"), kv("rpc.service", service), kv("rpc.method", rpc)]);
        if let Some((code, message)) = grpc::status(e) {
            a.push(int("rpc.grpc.status_code", u64::from(code)));
            // Only these codes are the server's fault; any non-zero one is the client's.
            let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
            if code != 0 && (conn.role != Role::Server || server_fault) {
                error = Some(message.map_or_else(|| code.to_string(), str::to_string));
            }
        }
        format!("{service}/{rpc}")
    } else {
        method.to_string()
    };
    (name, e.latency_ns(), a, error)
}

fn db(e: &DbExchange, conn: &ConnView<'_>) -> Parts {
    let mut a = server(conn, None);
    let (system, query, operation, namespace, error) = match e {
        DbExchange::Pgsql(p) => (
            "postgresql",
            p.request.query.clone(),
            first_word(&p.request.query).unwrap_or(p.request.kind).to_string(),
            p.database.clone(),
            p.response.as_ref().and_then(|r| r.error.as_ref()).map(|e| e.code.clone()),
        ),
        DbExchange::Mysql(m) => (
            "mysql",
            m.request.query.clone(),
            first_word(&m.request.query).unwrap_or(&m.request.command).to_string(),
            m.database.clone(),
            m.response.as_ref().and_then(|r| r.error.as_ref()).map(|e| e.code.to_string()),
        ),
        DbExchange::Kafka(k) => return kafka(k, conn),
        DbExchange::Mongodb(m) => return super::mongodb::span(m, conn),
        DbExchange::Redis(r) => {
            let command = r.request.as_ref().map(|q| &q.command);
            let text = command.map(|c| {
                let mut t = c.name.clone();
                for arg in &c.args {
                    t.push(' ');
                    t.push_str(&String::from_utf8_lossy(&arg.data));
                }
                t
            });
            let error = match r.response.as_ref().map(|v| &v.value) {
                Some(Value::Error(b) | Value::BulkError(b)) => {
                    Some(first_word(&String::from_utf8_lossy(&b.data)).unwrap_or("ERR").to_string())
                }
                _ => None,
            };
            let name = command.map_or_else(|| "push".to_string(), |c| c.name.to_ascii_uppercase());
            ("redis", text.unwrap_or_default(), name, None, error)
        }
    };
    a.push(kv("db.system", system));
    a.push(kv("db.system.name", system));
    if !query.is_empty() {
        a.push(kv("db.query.text", query));
    }
    a.push(kv("db.operation.name", operation.as_str()));
    if let Some(ns) = namespace {
        a.push(kv("db.namespace", ns));
    }
    if let Some(code) = &error {
        a.push(kv("db.response.status_code", code.as_str()));
    }
    (operation, e.latency_ns(), a, error)
}

/// A Kafka exchange as a messaging span (OpenTelemetry's messaging
/// conventions): the API as the operation, the first topic as destination.
fn kafka(k: &KafkaExchange, conn: &ConnView<'_>) -> Parts {
    let mut a = server(conn, None);
    let operation = k.api();
    a.push(kv("messaging.system", "kafka"));
    a.push(kv("messaging.operation.name", operation.as_str()));
    let topic = k.request.body.topics.iter().flatten().find_map(|t| t.name.as_deref());
    if let Some(topic) = topic {
        a.push(kv("messaging.destination.name", topic));
    }
    if let Some(id) = &k.request.client_id {
        a.push(kv("messaging.client.id", id.as_str()));
    }
    let name = topic.map_or_else(|| operation.clone(), |t| format!("{operation} {t}"));
    (name, k.latency_ns(), a, None)
}

/// `server.address`/`server.port`: the name the client asked for when the
/// bytes say it (HTTP authority), else the DNS name, else the address.
pub(super) fn server(conn: &ConnView<'_>, authority: Option<&str>) -> Vec<KeyValue> {
    let server_end = if conn.role == Role::Server { conn.local } else { conn.remote };
    let (host, port) = match authority.map(split_authority) {
        Some((h, p)) => (h.to_string(), p.unwrap_or(server_end.port())),
        None => match (conn.role, conn.remote_host) {
            (Role::Server, _) | (_, None) => (server_end.ip().to_string(), server_end.port()),
            (_, Some(name)) => (name.to_string(), server_end.port()),
        },
    };
    let mut a = vec![kv("server.address", host), int("server.port", u64::from(port))];
    if conn.role == Role::Server {
        a.push(kv("client.address", conn.remote.ip().to_string()));
        a.push(int("client.port", u64::from(conn.remote.port())));
    }
    a
}

fn network(conn: &ConnView<'_>) -> Vec<KeyValue> {
    vec![
        kv("network.transport", "tcp"),
        kv("network.peer.address", conn.remote.ip().to_string()),
        int("network.peer.port", u64::from(conn.remote.port())),
        kv("network.local.address", conn.local.ip().to_string()),
        int("network.local.port", u64::from(conn.local.port())),
    ]
}

/// `host[:port]`, `[v6]:port`.
fn split_authority(a: &str) -> (&str, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

fn first_word(s: &str) -> Option<&str> {
    s.split_whitespace().next().filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
}

/// W3C `traceparent` of the request: the exchange joins the application's
/// trace, as a child of the span that sent it.
fn traceparent(e: &Exchange) -> Option<(Vec<u8>, Vec<u8>)> {
    let v = e.request.head.header("traceparent")?;
    let mut parts = v.trim().split('-');
    let (_version, trace, parent) = (parts.next()?, parts.next()?, parts.next()?);
    let trace = hex(trace, 16)?;
    let parent = hex(parent, 8)?;
    (trace.iter().any(|&b| b != 0) && parent.iter().any(|&b| b != 0)).then_some((trace, parent))
}

fn hex(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != 2 * len {
        return None;
    }
    (0..len).map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

/// Resource attributes: the process, its pod and workload, the node.
pub fn resource(pid: u32, comm: &str, pod: Option<&PodOf>, node: &str) -> Vec<KeyValue> {
    let service = pod
        .and_then(|p| p.meta.workload.as_ref().map(|w| w.name.clone()).or_else(|| Some(p.meta.pod.clone())))
        .unwrap_or_else(|| comm.to_string());
    let mut a = vec![
        kv("service.name", service),
        kv("host.name", node),
        int("process.pid", u64::from(pid)),
        kv("process.executable.name", comm),
        kv("telemetry.sdk.name", "nettap"),
    ];
    if let Some(p) = pod {
        a.push(kv("k8s.node.name", node));
        a.push(kv("k8s.pod.name", p.meta.pod.as_str()));
        a.push(kv("k8s.namespace.name", p.meta.namespace.as_str()));
        a.push(kv("k8s.pod.uid", p.meta.uid.as_str()));
        if let Some(c) = &p.container {
            a.push(kv("k8s.container.name", c.as_ref()));
        }
        if let Some(w) = &p.meta.workload {
            let key = match w.kind.as_str() {
                "Deployment" => Some("k8s.deployment.name"),
                "StatefulSet" => Some("k8s.statefulset.name"),
                "DaemonSet" => Some("k8s.daemonset.name"),
                "Job" => Some("k8s.job.name"),
                "CronJob" => Some("k8s.cronjob.name"),
                "ReplicaSet" => Some("k8s.replicaset.name"),
                _ => None,
            };
            if let Some(key) = key {
                a.push(kv(key, w.name.as_str()));
            }
        }
    }
    a
}

pub(super) fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
    }
}

fn int(key: &str, value: u64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value as i64)) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettap_core::protocols::exchange::{Head, Message};
    use nettap_core::record::Origin;

    fn attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        a.iter().find(|k| k.key == key).and_then(|k| k.value.as_ref()?.value.as_ref())
    }

    fn s(v: &str) -> Option<any_value::Value> {
        Some(any_value::Value::StringValue(v.into()))
    }

    fn exchange_with(role: Role, request: Head, status: u16) -> (Exchange, ConnView<'static>) {
        let msg = |head, ts| Message { head, start_ts: ts, end_ts: ts, ..Default::default() };
        let e = Exchange::new(
            Box::new(msg(request, 1_000)),
            Some(Box::new(msg(Head { status, ..Default::default() }, 4_000))),
        );
        let conn = ConnView {
            id: 1,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:8080".parse().unwrap(),
            role,
            tls: false,
            remote_host: Some("api.internal"),
            k8s: None,
            peer: None,
        };
        (e, conn)
    }

    fn convert(e: &Exchange, conn: ConnView<'_>) -> Converted {
        let r = Record {
            origin: Origin {
                ts_ns: 1_700_000_000_000_000_000,
                pid: 7,
                comm: "curl",
                source: "kernel",
                probe: "p",
            },
            conn: Some(conn),
            body: Body::Http(e),
        };
        exchange(&r, "{}".into()).unwrap()
    }

    #[test]
    fn a_client_http_exchange_has_the_semantic_conventions() {
        let head = Head {
            method: "GET".into(),
            target: "/items?id=3".into(),
            headers: nettap_core::protocols::exchange::Fields::from_iter([("host", "shop:9000")]),
            ..Default::default()
        };
        let (e, conn) = exchange_with(Role::Client, head, 404);
        let c = convert(&e, conn);
        let a = &c.span.attributes;
        assert_eq!(c.span.kind, SpanKind::Client as i32);
        assert_eq!(c.span.name, "GET");
        assert_eq!(c.span.end_time_unix_nano - c.span.start_time_unix_nano, 3_000);
        assert_eq!(attr(a, "http.request.method").cloned(), s("GET"));
        assert_eq!(attr(a, "url.path").cloned(), s("/items"));
        assert_eq!(attr(a, "url.query").cloned(), s("id=3"));
        assert_eq!(attr(a, "server.address").cloned(), s("shop"));
        assert_eq!(attr(a, "server.port").cloned(), Some(any_value::Value::IntValue(9000)));
        assert_eq!(attr(a, "http.response.status_code").cloned(), Some(any_value::Value::IntValue(404)));
        assert_eq!(attr(a, "network.peer.address").cloned(), s("10.0.0.2"));
        assert_eq!(c.span.status.unwrap().code, StatusCode::Error as i32, "4xx is a client error");
        assert_eq!((c.log.trace_id, c.log.span_id), (c.span.trace_id, c.span.span_id));
    }

    #[test]
    fn a_server_span_joins_the_callers_trace() {
        let head = Head {
            method: "POST".into(),
            target: "/pkg.Svc/Call".into(),
            version: Version::H2,
            headers: nettap_core::protocols::exchange::Fields::from_iter([
                ("content-type", "application/grpc"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ]),
            ..Default::default()
        };
        let (e, conn) = exchange_with(Role::Server, head, 404);
        let c = convert(&e, conn);
        assert_eq!(c.span.kind, SpanKind::Server as i32);
        assert_eq!(c.span.name, "pkg.Svc/Call");
        assert_eq!(hex("0af7651916cd43dd8448eb211c80319c", 16).unwrap(), c.span.trace_id);
        assert_eq!(hex("b7ad6b7169203331", 8).unwrap(), c.span.parent_span_id);
        let a = &c.span.attributes;
        assert_eq!(attr(a, "rpc.service").cloned(), s("pkg.Svc"));
        assert_eq!(attr(a, "server.port").cloned(), Some(any_value::Value::IntValue(40000)));
        assert_eq!(attr(a, "client.address").cloned(), s("10.0.0.2"));
        assert_eq!(c.span.status.unwrap().code, StatusCode::Unset as i32, "4xx is not the server's error");
    }

    #[test]
    fn a_failed_postgresql_query_is_a_db_span_with_the_error() {
        use nettap_core::protocols::pgsql::{PgError, PgExchange, PgRequest, PgResponse};
        let e = DbExchange::Pgsql(PgExchange {
            request: PgRequest {
                kind: "query",
                query: "SELECT * FROM missing".into(),
                statement: None,
                params: Vec::new(),
                ts: 10,
            },
            response: Some(PgResponse {
                error: Some(PgError { code: "42P01".into(), ..Default::default() }),
                ..Default::default()
            }),
            user: Some("app".into()),
            database: Some("shop".into()),
        });
        let (_, conn) = exchange_with(Role::Client, Head::default(), 200);
        let r = Record {
            origin: Origin { ts_ns: 5, pid: 7, comm: "psql", source: "kernel", probe: "p" },
            conn: Some(conn),
            body: Body::Db(&e),
        };
        let c = exchange(&r, "{}".into()).unwrap();
        let a = &c.span.attributes;
        assert_eq!((c.span.name.as_str(), c.span.kind), ("SELECT", SpanKind::Client as i32));
        assert_eq!(attr(a, "db.system").cloned(), s("postgresql"));
        assert_eq!(attr(a, "db.query.text").cloned(), s("SELECT * FROM missing"));
        assert_eq!(attr(a, "db.namespace").cloned(), s("shop"));
        assert_eq!(attr(a, "db.response.status_code").cloned(), s("42P01"));
        assert_eq!(attr(a, "server.address").cloned(), s("api.internal"), "the DNS name of the peer");
        assert_eq!(c.span.status.unwrap().code, StatusCode::Error as i32);
    }

    #[test]
    fn a_kafka_produce_is_a_messaging_span_not_a_db_one() {
        use nettap_core::protocols::kafka::api::{RequestBody, Topic};
        use nettap_core::protocols::kafka::KafkaRequest;
        let topic = Topic { name: Some("orders".into()), ..Default::default() };
        let e = DbExchange::Kafka(KafkaExchange {
            request: KafkaRequest {
                api_key: 0,
                api_version: 9,
                correlation_id: 4,
                client_id: Some("checkout".into()),
                body: RequestBody { acks: Some(-1), topics: Some(vec![topic]), ..Default::default() },
                undecoded: None,
                size: 100,
                start_ts: 10,
                end_ts: 20,
            },
            response: None,
        });
        let (_, conn) = exchange_with(Role::Client, Head::default(), 200);
        let r = Record {
            origin: Origin { ts_ns: 5, pid: 7, comm: "java", source: "kernel", probe: "p" },
            conn: Some(conn),
            body: Body::Db(&e),
        };
        let c = exchange(&r, "{}".into()).unwrap();
        let a = &c.span.attributes;
        assert_eq!((c.span.name.as_str(), c.span.kind), ("Produce orders", SpanKind::Client as i32));
        assert_eq!(attr(a, "messaging.system").cloned(), s("kafka"));
        assert_eq!(attr(a, "messaging.operation.name").cloned(), s("Produce"));
        assert_eq!(attr(a, "messaging.destination.name").cloned(), s("orders"));
        assert_eq!(attr(a, "messaging.client.id").cloned(), s("checkout"));
        assert!(attr(a, "db.system").is_none(), "not a database span");
    }

    #[test]
    fn authorities_split() {
        assert_eq!(split_authority("a:80"), ("a", Some(80)));
        assert_eq!(split_authority("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_authority("::1"), ("::1", None));
        assert_eq!(split_authority("a"), ("a", None));
    }
}

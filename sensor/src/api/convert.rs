//! The sensor's records as protobuf (`nettap.v1.Record`), for subscribers.

use nettap_core::dns::{rcode_name, AnswerData, DnsMessage};
use nettap_core::events::{Direction, Role};
use nettap_core::protocols::exchange::{Exchange, Fields, Message};
use nettap_core::protocols::grpc;
use nettap_core::record::{Body, ConnView, Origin, Record};
use nettap_shared_proto::v1;
use std::net::{IpAddr, SocketAddr};

fn endpoint(a: SocketAddr) -> v1::Endpoint {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    v1::Endpoint { ip, port: u32::from(a.port()) }
}

fn conn(c: &ConnView<'_>) -> v1::Conn {
    v1::Conn {
        local: Some(endpoint(c.local)),
        remote: Some(endpoint(c.remote)),
        role: match c.role {
            Role::Client => v1::Role::Client,
            Role::Server => v1::Role::Server,
            Role::Unknown => v1::Role::Unknown,
        } as i32,
        tls: c.tls,
        remote_host: c.remote_host.unwrap_or_default().to_string(),
    }
}

fn k8s(c: &ConnView<'_>) -> Option<v1::K8s> {
    let pod = c.k8s?;
    let m = &pod.meta;
    Some(v1::K8s {
        pod: m.pod.clone(),
        namespace: m.namespace.clone(),
        labels: m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workload: m.workload.as_ref().map(|w| v1::Workload { kind: w.kind.clone(), name: w.name.clone() }),
        uid: m.uid.clone(),
        container: pod.container.as_deref().unwrap_or_default().to_string(),
    })
}

fn origin(o: &Origin<'_>) -> v1::Origin {
    let source = match o.source {
        "openssl" => v1::Source::Openssl,
        "go-tls" => v1::Source::GoTls,
        "jvmti" => v1::Source::Jvmti,
        "boringssl" => v1::Source::Boringssl,
        "gnutls" => v1::Source::Gnutls,
        "nss" => v1::Source::Nss,
        "rustls" => v1::Source::Rustls,
        _ => v1::Source::Kernel,
    };
    v1::Origin {
        ts_ns: o.ts_ns,
        pid: o.pid,
        comm: o.comm.to_string(),
        source: source as i32,
        probe: o.probe.to_string(),
    }
}

fn header_list(fields: &Fields) -> Vec<v1::Header> {
    fields.iter().map(|(n, v)| v1::Header { name: n.to_string(), value: v.to_string() }).collect()
}

fn message(m: &Message, request: bool) -> v1::HttpMessage {
    let h = &m.head;
    v1::HttpMessage {
        method: if request { h.method.clone() } else { String::new() },
        path: if request { h.target.clone() } else { String::new() },
        authority: if request { h.authority().unwrap_or_default().to_string() } else { String::new() },
        status: if request { 0 } else { u32::from(h.status) },
        headers: header_list(&h.headers),
        body: m.body.clone(),
        body_truncated: m.body_truncated,
        headers_incomplete: h.headers_incomplete,
        trailers: header_list(&m.trailers),
    }
}

/// The subscribers' form of a record (every kind the JSON Lines output has;
/// the publisher decides which data records, as that output does).
pub fn record(r: &Record<'_>) -> v1::Record {
    let Some(c) = r.conn.as_ref() else {
        // Only drops have no connection.
        return v1::Record {
            origin: Some(origin(&r.origin)),
            kind: match r.body {
                Body::Drop(d) => Some(drop_kind(&d)),
                _ => None,
            },
            ..Default::default()
        };
    };
    match r.body {
        Body::Http(e) => http_record(&r.origin, c, e),
        Body::Dns(m, direction) => dns_record(&r.origin, c, m, direction),
        Body::Conn(change) => conn_record(&r.origin, c, change),
        Body::Db(e) => db_record(&r.origin, c, e),
        Body::Data { direction, seq, payload, truncated, .. } => v1::Record {
            origin: Some(origin(&r.origin)),
            conn: Some(conn(c)),
            k8s: k8s(c),
            kind: Some(v1::record::Kind::Data(v1::DataChunk {
                direction: proto_direction(direction) as i32,
                seq,
                payload: payload.to_vec(),
                truncated: u64::from(truncated),
            })),
            ..Default::default()
        },
        Body::Drop(d) => v1::Record {
            origin: Some(origin(&r.origin)),
            conn: Some(conn(c)),
            k8s: k8s(c),
            kind: Some(drop_kind(&d)),
            ..Default::default()
        },
    }
}

fn drop_kind(d: &nettap_core::record::DropRecord) -> v1::record::Kind {
    v1::record::Kind::Drop(v1::Drop { count: d.count, bytes: d.bytes, reason: d.reason.to_string() })
}

fn proto_direction(d: Direction) -> v1::Direction {
    match d {
        Direction::Send => v1::Direction::Send,
        Direction::Recv => v1::Direction::Recv,
    }
}

/// A `redis`, `pgsql`, `mysql` or `kafka` record: its fields as the JSON Lines record has them.
pub fn db_record(o: &Origin<'_>, c: &ConnView<'_>, e: &nettap_core::protocols::db::DbExchange) -> v1::Record {
    let fields = nettap_core::record::db_json(e);
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let (asked, answer) = e.summary();
    v1::Record {
        origin: Some(origin(o)),
        conn: Some(conn(c)),
        k8s: k8s(c),
        kind: Some(v1::record::Kind::Db(v1::DbExchange {
            kind: e.kind().to_string(),
            request_json: fields["request"].to_string(),
            response_json: fields["response"].to_string(),
            latency_ns: e.latency_ns(),
            // MongoDB names the database per request.
            database: fields["request"]["database"].as_str().map_or_else(|| text("database"), str::to_string),
            user: text("user"),
            summary: format!("{asked} -> {answer}"),
        })),
        ..Default::default()
    }
}

/// A `conn` record.
pub fn conn_record(o: &Origin<'_>, c: &ConnView<'_>, change: nettap_core::events::ConnChange) -> v1::Record {
    use nettap_core::events::ConnChange;
    let event = match change {
        ConnChange::Open => v1::conn_event::Event::Open,
        ConnChange::Close | ConnChange::CloseUntracked => v1::conn_event::Event::Close,
        ConnChange::Midstream => v1::conn_event::Event::Midstream,
    };
    v1::Record {
        origin: Some(origin(o)),
        conn: Some(conn(c)),
        k8s: k8s(c),
        kind: Some(v1::record::Kind::ConnEvent(v1::ConnEvent { event: event as i32 })),
        ..Default::default()
    }
}

/// An `http` record.
pub fn http_record(o: &Origin<'_>, c: &ConnView<'_>, e: &Exchange) -> v1::Record {
    let grpc_call = grpc::is_grpc(&e.request.head).then(|| {
        let (service, method) = grpc::service_method(&e.request.head.target).unwrap_or(("", ""));
        let status = grpc::status(e);
        let msgs = |m: Option<&Message>| {
            m.map(|m| grpc::app_messages(m).into_iter().map(|g| g.data.into_owned()).collect())
                .unwrap_or_default()
        };
        v1::GrpcCall {
            service: service.to_string(),
            method: method.to_string(),
            status: status.map(|(c, _)| c),
            message: status.and_then(|(_, m)| m).unwrap_or_default().to_string(),
            request_messages: msgs(Some(&e.request)),
            response_messages: msgs(e.response.as_deref()),
        }
    });
    v1::Record {
        origin: Some(origin(o)),
        conn: Some(conn(c)),
        k8s: k8s(c),
        kind: Some(v1::record::Kind::Http(v1::HttpExchange {
            protocol: e.request.head.protocol().to_string(),
            request: Some(message(&e.request, true)),
            response: e.response.as_ref().map(|r| message(r, false)),
            latency_ns: e.latency_ns(),
            grpc: grpc_call,
            reset: e.reset_name().unwrap_or_default(),
        })),
        ..Default::default()
    }
}

/// A `dns` record.
pub fn dns_record(o: &Origin<'_>, c: &ConnView<'_>, m: &DnsMessage, direction: Direction) -> v1::Record {
    let records = m
        .answers
        .iter()
        .map(|a| {
            let (kind, data) = match &a.data {
                AnswerData::Addr(ip) => (if ip.is_ipv4() { "A" } else { "AAAA" }.to_string(), ip.to_string()),
                AnswerData::Cname(t) => ("CNAME".to_string(), t.clone()),
                AnswerData::Other(k) => (k.clone(), String::new()),
            };
            v1::DnsAnswer { name: a.name.clone(), ttl: a.ttl, r#type: kind, data }
        })
        .collect();
    v1::Record {
        origin: Some(origin(o)),
        conn: Some(conn(c)),
        k8s: k8s(c),
        kind: Some(v1::record::Kind::Dns(v1::Dns {
            direction: proto_direction(direction) as i32,
            id: u32::from(m.id),
            response: m.response,
            query: m.questions.first().map(|(n, _)| n.clone()).unwrap_or_default(),
            qtype: m.questions.first().map(|(_, t)| t.clone()).unwrap_or_default(),
            answers: m
                .answers
                .iter()
                .filter_map(|a| match a.data {
                    AnswerData::Addr(ip) => Some(ip.to_string()),
                    _ => None,
                })
                .collect(),
            records,
            rcode: rcode_name(m.rcode).into_owned(),
        })),
        ..Default::default()
    }
}

//! The fields of a `kafka` record (CONTRACT.md): `request` `{api, api_key,
//! api_version, correlation_id, client_id, topics: [{name, partitions:
//! [{partition, records: [{key, value, headers}]}]}]}`, `response`
//! `{error_code, topics…}`, `latency_ns`. Keys, values and header values
//! follow the body rule (text as a string, anything else as `{"b64"}`).

use super::db::Bytes;
use crate::protocols::kafka::api::{Partition, Topic};
use crate::protocols::kafka::batch::{Record, RecordSet};
use crate::protocols::kafka::wire::uuid_text;
use crate::protocols::kafka::{KafkaExchange, KafkaRequest, KafkaResponse};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Writes `e`'s own fields into the record's map.
pub(super) fn fields<M: SerializeMap>(m: &mut M, e: &KafkaExchange) -> Result<(), M::Error> {
    m.serialize_entry("request", &RequestView(&e.request, e))?;
    m.serialize_entry("response", &e.response.as_ref().map(ResponseView))?;
    m.serialize_entry("latency_ns", &e.latency_ns())
}

struct RequestView<'a>(&'a KafkaRequest, &'a KafkaExchange);

impl Serialize for RequestView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = self.0;
        let b = &q.body;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("api", &self.1.api())?;
        m.serialize_entry("api_key", &q.api_key)?;
        m.serialize_entry("api_version", &q.api_version)?;
        m.serialize_entry("correlation_id", &q.correlation_id)?;
        m.serialize_entry("client_id", &q.client_id)?;
        if let Some(t) = &b.transactional_id {
            m.serialize_entry("transactional_id", t)?;
        }
        if let Some(a) = b.acks {
            m.serialize_entry("acks", &a)?;
        }
        if let Some(i) = b.isolation_level {
            m.serialize_entry("isolation_level", &i)?;
        }
        if let Some((name, version)) = &b.client_software {
            m.serialize_entry("client_software", &serde_json::json!({"name": name, "version": version}))?;
        }
        // Metadata for every topic: `topics` is null.
        if b.topics.is_some() || q.api_key == crate::protocols::kafka::api::key::METADATA {
            m.serialize_entry("topics", &b.topics.as_deref().map(|t| Topics(t, false)))?;
        }
        if let Some(why) = q.undecoded {
            m.serialize_entry("undecoded", why)?;
        }
        m.serialize_entry("size", &q.size)?;
        m.end()
    }
}

struct ResponseView<'a>(&'a KafkaResponse);

impl Serialize for ResponseView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = &self.0.body;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("error_code", &b.error_code)?;
        if let Some(t) = b.throttle_time_ms {
            m.serialize_entry("throttle_time_ms", &t)?;
        }
        if !b.topics.is_empty() {
            m.serialize_entry("topics", &Topics(&b.topics, true))?;
        }
        if !b.brokers.is_empty() {
            let brokers: Vec<_> = b
                .brokers
                .iter()
                .map(|b| serde_json::json!({"node_id": b.node_id, "host": b.host, "port": b.port}))
                .collect();
            m.serialize_entry("brokers", &brokers)?;
        }
        if !b.api_versions.is_empty() {
            let apis: Vec<_> = b
                .api_versions
                .iter()
                .map(|&(k, min, max)| serde_json::json!({"api_key": k, "min_version": min, "max_version": max}))
                .collect();
            m.serialize_entry("api_versions", &apis)?;
        }
        if let Some(why) = self.0.undecoded {
            m.serialize_entry("undecoded", why)?;
        }
        m.serialize_entry("size", &self.0.size)?;
        m.end()
    }
}

/// Topics; `offsets`: records carry their offsets (a response's are the
/// log's; a produce request's are only deltas).
struct Topics<'a>(&'a [Topic], bool);

impl Serialize for Topics<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|t| TopicView(t, self.1)))
    }
}

struct TopicView<'a>(&'a Topic, bool);

impl Serialize for TopicView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &t.name)?;
        if let Some(id) = &t.topic_id {
            m.serialize_entry("topic_id", &uuid_text(id))?;
        }
        if let Some(e) = t.error_code {
            m.serialize_entry("error_code", &e)?;
        }
        m.serialize_entry("partitions", &PartitionsView(&t.partitions, self.1))?;
        m.end()
    }
}

struct PartitionsView<'a>(&'a [Partition], bool);

impl Serialize for PartitionsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| PartitionView(p, self.1)))
    }
}

struct PartitionView<'a>(&'a Partition, bool);

impl Serialize for PartitionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("partition", &p.partition)?;
        let optional = [
            ("error_code", p.error_code.map(i64::from)),
            ("fetch_offset", p.fetch_offset),
            ("base_offset", p.base_offset),
            ("high_watermark", p.high_watermark),
            ("leader", p.leader.map(i64::from)),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.serialize_entry(k, &v)?;
            }
        }
        if let Some(msg) = &p.error_message {
            m.serialize_entry("error_message", msg)?;
        }
        if let Some(set) = &p.records {
            set_fields(&mut m, set, self.1)?;
        }
        m.end()
    }
}

fn set_fields<M: SerializeMap>(m: &mut M, set: &RecordSet, offsets: bool) -> Result<(), M::Error> {
    m.serialize_entry("records", &RecordsView(&set.records, offsets))?;
    if set.omitted > 0 {
        m.serialize_entry("records_omitted", &set.omitted)?;
    }
    if !set.compression.is_empty() {
        m.serialize_entry("compression", &set.compression)?;
    }
    if let Some(pid) = set.producer_id {
        m.serialize_entry("producer_id", &pid)?;
    }
    if set.undecoded > 0 {
        m.serialize_entry("batches_undecoded", &set.undecoded)?;
        m.serialize_entry("undecoded_reason", &set.undecoded_reason)?;
    }
    m.serialize_entry("records_bytes", &set.bytes)
}

struct RecordsView<'a>(&'a [Record], bool);

impl Serialize for RecordsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| RecordView(r, self.1)))
    }
}

struct RecordView<'a>(&'a Record, bool);

impl Serialize for RecordView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        if self.1 {
            m.serialize_entry("offset", &r.offset)?;
        }
        m.serialize_entry("timestamp", &r.timestamp)?;
        m.serialize_entry("key", &r.key.as_deref().map(Bytes))?;
        m.serialize_entry("value", &r.value.as_deref().map(Bytes))?;
        let headers: Vec<_> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref().map(Bytes))).collect();
        m.serialize_entry("headers", &headers)?;
        if r.truncated > 0 {
            m.serialize_entry("truncated_bytes", &r.truncated)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::kafka::api::{RequestBody, ResponseBody};
    use serde_json::json;

    fn json_of(e: &KafkaExchange) -> serde_json::Value {
        super::super::db::json(&crate::protocols::db::DbExchange::Kafka(e.clone()))
    }

    #[test]
    fn produce_fields() {
        let set = RecordSet {
            records: vec![Record {
                offset: 0,
                timestamp: 5,
                key: Some(b"k".to_vec()),
                value: Some(vec![0xff, 0]),
                truncated: 3,
                headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
            }],
            compression: vec!["gzip"],
            producer_id: Some(3),
            bytes: 70,
            ..RecordSet::default()
        };
        let topic = |p: Partition| Topic {
            name: Some("t".into()),
            topic_id: Some([0; 16]),
            partitions: vec![p],
            ..Topic::default()
        };
        let e = KafkaExchange {
            request: KafkaRequest {
                api_key: 0,
                api_version: 13,
                correlation_id: 7,
                client_id: Some("c".into()),
                body: RequestBody {
                    acks: Some(-1),
                    topics: Some(vec![topic(Partition { records: Some(set), ..Partition::default() })]),
                    ..RequestBody::default()
                },
                undecoded: None,
                size: 100,
                start_ts: 10,
                end_ts: 11,
            },
            response: Some(KafkaResponse {
                body: ResponseBody {
                    topics: vec![topic(Partition {
                        error_code: Some(0),
                        base_offset: Some(42),
                        ..Partition::default()
                    })],
                    ..ResponseBody::default()
                },
                undecoded: None,
                size: 20,
                start_ts: 20,
                end_ts: 25,
            }),
        };
        let id = "AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            json_of(&e),
            json!({
                "request": {"api": "Produce", "api_key": 0, "api_version": 13, "correlation_id": 7, "client_id": "c", "acks": -1,
                            "topics": [{"name": "t", "topic_id": id, "partitions": [{"partition": 0,
                                "records": [{"timestamp": 5, "key": "k", "value": {"b64": "/wA="}, "headers": [["h", "v"], ["n", null]], "truncated_bytes": 3}],
                                "compression": ["gzip"], "producer_id": 3, "records_bytes": 70}]}],
                            "size": 100},
                "response": {"error_code": 0, "topics": [{"name": "t", "topic_id": id, "partitions": [{"partition": 0, "error_code": 0, "base_offset": 42}]}], "size": 20},
                "latency_ns": 15
            })
        );
    }
}
